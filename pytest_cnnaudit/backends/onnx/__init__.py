"""ONNX models through onnxruntime: the backend, and the graph walk that finds each conv's activation.

:mod:`.backend` runs the model; :mod:`.graph` indexes and walks it (:mod:`.activations` recognises
activations in their exported forms, :mod:`.quantised` reads int8 graphs as the float graph they
came from, :mod:`.constants` folds weights computed from constants, :mod:`.first_conv` re-expresses
the first conv's weights on the model's external input); :mod:`.nodes` holds node helpers.
"""

from .backend import OnnxBackend, load_onnx_model

__all__ = ["OnnxBackend", "load_onnx_model"]
