"""Reference row: raw pixels as the embedding, scored by any embedding head. Nothing is trained."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.method import Method


@dataclass
class PixelsConfig:
    """No settings: the embedding is the normalised image itself."""


class Pixels(Method):
    Config = PixelsConfig
    trains = False

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalize(images).flatten(1)
