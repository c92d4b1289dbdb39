"""The audit document: the one typed record of an audit that every report is written from."""

from .baseline import Baseline, BaselineLayer
from .figures import (
    BaselineFigures,
    ColorBoundFigures,
    ColorFigures,
    DeadFiltersFigures,
    Figures,
    LrLayerFigures,
    LrModelFigures,
    SparsityFigures,
)
from .model import (
    LOAD_CHECK,
    SCHEMA,
    AuditDocument,
    LayerDocument,
    ModelDocument,
    Outcome,
    ProbeInfo,
    Verdict,
    dump_json,
    item_id,
)
from .sections import ColorProfile, ColorProfileLayer, FirstLayerProfile, LrSweep, SweepPoint

__all__ = [
    "LOAD_CHECK",
    "SCHEMA",
    "AuditDocument",
    "Baseline",
    "BaselineFigures",
    "BaselineLayer",
    "ColorBoundFigures",
    "ColorFigures",
    "ColorProfile",
    "ColorProfileLayer",
    "DeadFiltersFigures",
    "Figures",
    "FirstLayerProfile",
    "LayerDocument",
    "LrLayerFigures",
    "LrModelFigures",
    "LrSweep",
    "ModelDocument",
    "Outcome",
    "ProbeInfo",
    "SparsityFigures",
    "SweepPoint",
    "Verdict",
    "dump_json",
    "item_id",
]
