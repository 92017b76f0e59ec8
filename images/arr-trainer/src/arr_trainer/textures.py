"""Procedural textures (sinusoid gratings and checkerboards), generated in code, no downloads."""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset


def texture(generator: torch.Generator, size: int, channels: int = 3) -> torch.Tensor:
    """One texture in [-1, 1] with shape (channels, size, size), drawn from `generator`."""
    coords = torch.linspace(0.0, 1.0, size)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    kind = int(torch.randint(0, 2, (1,), generator=generator))
    if kind == 0:
        angle = float(torch.rand(1, generator=generator)) * math.pi
        frequency = 2.0 + float(torch.rand(1, generator=generator)) * 6.0
        phase = float(torch.rand(1, generator=generator)) * 2.0 * math.pi
        along = x * math.cos(angle) + y * math.sin(angle)
        pattern = torch.sin(2.0 * math.pi * frequency * along + phase)
    else:
        cells = int(torch.randint(2, 9, (1,), generator=generator))
        pattern = ((torch.floor(x * cells) + torch.floor(y * cells)) % 2) * 2.0 - 1.0
    # A random colour per channel keeps the channels correlated but not identical.
    colour = torch.rand(channels, 1, 1, generator=generator) * 2.0 - 1.0
    return (pattern.unsqueeze(0) * colour).clamp(-1.0, 1.0)


class NoisyTextures(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(noisy, clean) texture pairs; item `i` depends only on `seed` and `i`."""

    def __init__(self, length: int, size: int = 32, noise: float = 0.3, seed: int = 0) -> None:
        if length < 1 or size < 2:
            raise ValueError("length must be at least 1 and size at least 2")
        self.length = length
        self.size = size
        self.noise = noise
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        clean = texture(generator, self.size)
        noisy = clean + self.noise * torch.randn(clean.shape, generator=generator)
        return noisy, clean
