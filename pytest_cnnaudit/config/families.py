"""Activation families: which activations are rectifiers, and the default limits of each family.

Every rectifier is inactive where its output is <= 0, so sparsity and dead filters mean the
same for all of them; how sparse a healthy trained layer is still depends on the family. The
defaults below come from measurements of trained networks shipped in packages (32 seeded crops
of the four shipped photographs through each package's own preprocessing; per family, the
fraction of each conv layer's activation values <= 0, and the share of channels never > 0):

========================  ======  ==========================  =====================================
family                    layers  fraction <= 0: min / median  never-active channels: all / worst
                                  / max                        layer
========================  ======  ==========================  =====================================
ReLU (OCR and layout     45      0.14 / 0.51 / 0.96           1.2% / 40.6% (CRAFT conv1_1: 25 of
nets, CRAFT, easyocr)                                          its 26 provably dead)
ReLU on 1x1 maps (SE)     36      0.18 / 0.47 / 0.76           20.9% / 50% (14 layers over 25%)
SiLU (YOLOv8n, YOLOX)     153     0.07 / 0.49 / 0.86           0.28% / 20.8%
HardSwish (PP-OCRv4 det,  163     0.004 / 0.45 / 0.98          0.93% / 26.6%
PP-LCNet, PicoDet)
PReLU (MTCNN)             10      0.34 / 0.58 / 0.70           0.21% / 1.6%
GELU, Erf form (PP-OCRv6  13      0.46 / 0.80 / 0.96           14.6% / 45.4%
det)
========================  ======  ==========================  =====================================

So sparsity's default [0.03, 0.97] holds for every family but HardSwish, whose healthy layers
reach 0.004 and 0.983 (PP-OCRv4's text detector): its default is [0.0, 0.99]. Dead filters'
default of a quarter of a layer holds for ReLU, SiLU and PReLU; HardSwish's worst healthy layer
has 26.6% (default 0.3) and GELU's 45.4% (default 0.5, from one network: a team with GELU
networks should measure its own). Layers with one position per image (a squeeze-and-excitation
conv on a pooled 1x1 map) give 32 values per channel, too few to show that a channel is dead:
``checks.dead_filters.min_positions`` (default 2) leaves them unjudged.

A limit the config sets (for the check, a model, a layer rule, or a family under
``by_activation``) always wins over these defaults; a family entry wins over the check's own.
"""

from __future__ import annotations

#: Activations whose output is <= 0 exactly where the unit is inactive (``backends.base`` names the
#: kinds the graph walks report with these names).
RECTIFIERS = (
    "relu",
    "relu6",
    "clip",
    "hardswish",
    "silu",
    "gelu",
    "mish",
    "elu",
    "selu",
    "celu",
    "leaky_relu",
    "prelu",
    "thresholded_relu",
)
#: Activations that saturate and have no inactive region: no output value means "off".
SATURATING = ("sigmoid", "hard_sigmoid", "tanh", "softmax", "softplus")

#: Sparsity bounds [min, max] by family, and for every other rectifier.
SPARSITY_BOUNDS: dict[str, tuple[float, float]] = {"hardswish": (0.0, 0.99)}
DEFAULT_SPARSITY_BOUNDS = (0.03, 0.97)
#: The largest dead fraction of a layer by family, and for every other rectifier.
DEAD_FRACTION: dict[str, float] = {"hardswish": 0.3, "gelu": 0.5}
DEFAULT_DEAD_FRACTION = 0.25


def first_set(*values: float | None) -> float | None:
    """The first value that is not None (a more specific setting before a less specific one)."""
    return next((value for value in values if value is not None), None)
