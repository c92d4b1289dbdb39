"""Colour sensitivity: the first conv's weights on opponent colour axes, and a CSI profile of every layer."""
