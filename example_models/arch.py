"""The architecture shared by every example model: ``arch:SmallCNN`` in the YAML configs.

Module names are the audit's layer ids (``conv1``, ``conv2``, ``conv3``), and the
ONNX export renames its Conv nodes to match, so both formats report the same
layers. Each ReLU is its own module instance so that a forward hook on it sees
one layer's activations only.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """conv1 (stride 2) -> bn1 -> ReLU -> conv2 -> bn2 -> ReLU -> maxpool -> conv3 -> ReLU -> GAP -> fc.

    Takes RGB in [0, 1], NCHW, with no mean/std normalisation. The stride of conv1
    makes training four times cheaper and widens conv3's receptive field to 17
    pixels, enough to tell the synthetic shapes apart after global pooling.

    bn1 keeps every first-layer filter responsive on the probe photographs: without
    it, conv1's filters drift towards silence on whatever the synthetic training
    images lack (green, chromatic edges), and "dead on the probe photos" stops
    being a property of the weights. Both BatchNorms fold into their Conv in ONNX.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 4, width: int = 16) -> None:
        super().__init__()
        # No conv bias before a BatchNorm: its shift does that job.
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, 2 * width, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, kernel_size=3, padding=1)
        self.relu3 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)
        # A zero bias starts every conv3 unit active on about half of its inputs;
        # torch's default draws a random one.
        nn.init.zeros_(self.conv3.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(image)))
        x = self.pool(self.relu2(self.bn2(self.conv2(x))))
        x = self.relu3(self.conv3(x))
        return self.fc(torch.flatten(self.gap(x), 1))
