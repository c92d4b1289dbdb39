"""The suite's one piece of shared set-up: heavy modules are loaded before any test runs.

pytester's in-process runs (``pytester.runpytest``) drop from ``sys.modules`` whatever each run
imported, so the next run imports it again; onnx's C extension then aborts the process, and
torch's lazily imported export machinery fails to register twice ("already registered"). Loaded
here first, they are in pytester's snapshot and stay loaded. (Whether auditing an ONNX model
imports torch is tested in fresh subprocesses.)
"""

import onnx  # noqa: F401
import onnx2torch  # noqa: F401
import onnxruntime  # noqa: F401
import torch
from torch._export.converter import TS2EPConverter  # noqa: F401 - TorchScript models go through it

# torch.export imports most of its machinery on first use: use it once.
torch.export.export(torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1), torch.nn.ReLU()), (torch.zeros(1, 3, 2, 2),))
