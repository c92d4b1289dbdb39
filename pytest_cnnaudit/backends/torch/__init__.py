"""PyTorch models: TorchScript, ``torch.export`` archives, state_dicts with a factory, nn.Modules.

``loading`` opens a file (safely), ``graph`` exports and instruments the model,
``backend`` runs it batch by batch.
"""

from .backend import TorchBackend
from .graph import export_graph, getattr_path, instrument
from .loading import load_torch_module

__all__ = ["TorchBackend", "export_graph", "getattr_path", "instrument", "load_torch_module"]
