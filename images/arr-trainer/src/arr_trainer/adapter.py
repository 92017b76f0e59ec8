"""The texture adapter: a small residual convolutional network."""

from __future__ import annotations

import torch
from torch import nn


class TextureAdapter(nn.Module):
    """Adds a learned correction to its input; starts as the identity.

    The last convolution is zero-initialised so that an untrained adapter passes
    textures through unchanged, the usual way adapters are inserted into a model.
    """

    def __init__(self, channels: int = 3, hidden: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, channels, kernel_size=1),
        )
        last = self.body[-1]
        assert isinstance(last, nn.Conv2d)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
