"""The suite's one piece of shared set-up: heavy extension modules are imported before any test.

pytester's in-process runs (``pytester.runpytest``) drop from ``sys.modules`` whatever each run
imported, so the next run imports it again; onnx's C extension aborts the whole process when it
is initialised a second time. Imported here first, these modules are in pytester's snapshot and
stay loaded. (Whether auditing an ONNX model imports torch is tested in fresh subprocesses.)
"""

import onnx  # noqa: F401
import onnxruntime  # noqa: F401
import torch  # noqa: F401
