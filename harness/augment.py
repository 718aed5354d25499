"""Augmented views for self-supervised methods.

Two view generators draw from the same parameter ranges (the arguments of lightly's
``SimCLRTransform`` / ``BYOLView1Transform``, collected in :class:`ViewConfig`):

- :class:`TensorViews` (the default): the whole batch at once on the training device. Random
  resized crop, flips and rotation are one affine warp (``grid_sample``); colour jitter, greyscale,
  Gaussian blur and solarisation are batched tensor ops. Random numbers come from the runner's CPU
  generator, so a seed gives the same views on every device.
- :func:`lightly_transform`: lightly's own per-image PIL transform with the same settings (used by
  ``views=lightly`` and as the reference in tests and benchmarks).

Differences from the PIL pipeline, by design: crops are sampled in one shot (rejection up to ten
tries, like torchvision, then the whole image); colour-jitter factors are applied in the fixed order
brightness, contrast, saturation, hue (torchvision shuffles the order); hue is rotated in YIQ space.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from harness.config import ViewConfig


class TensorViews:
    """Batched views: uint8 N×C×H×W on any device → normalised float views, channels-last."""

    def __init__(self, cfg: ViewConfig, channels: int, size: int, mean, std):
        self.cfg, self.channels, self.size = cfg, channels, size
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        device = images.device
        n = len(images)
        x = images.float().div_(255)
        x = F.grid_sample(
            x, self.grids(n, generator).to(device), mode="bilinear", padding_mode="zeros", align_corners=False
        )
        x = self.color(x, generator)
        x = self.blur(x, generator)
        solarize = (torch.rand(n, generator=generator) < self.cfg.solarization_prob).to(device).view(-1, 1, 1, 1)
        x = torch.where(solarize & (x >= 128 / 255), 1 - x, x)
        x = (x - self.mean.to(device)) / self.std.to(device)
        return x.contiguous(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ geometry
    def crop_boxes(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """RandomResizedCrop boxes as fractions of the image: (width, height) [n, 2] and centre [n, 2] in [-1, 1]."""
        scale = torch.ones(n, 2)
        pending = torch.ones(n, dtype=torch.bool)
        log_ratio = (math.log(3 / 4), math.log(4 / 3))
        for _ in range(10):  # torchvision's rejection loop, for all images at once
            area = self.cfg.min_scale + (1 - self.cfg.min_scale) * torch.rand(n, generator=generator)
            ratio = torch.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * torch.rand(n, generator=generator))
            w, h = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
            fits = pending & (w <= 1) & (h <= 1)
            scale[fits] = torch.stack([w, h], 1)[fits]
            pending &= ~fits
        centre = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - scale)
        return scale, centre

    def grids(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Sampling grids for crop → flips → rotation, composed into one affine map per image."""
        scale, centre = self.crop_boxes(n, generator)
        flip_x = torch.where(torch.rand(n, generator=generator) < self.cfg.hf_prob, -1.0, 1.0)
        flip_y = torch.where(torch.rand(n, generator=generator) < self.cfg.vf_prob, -1.0, 1.0)
        rotate = torch.rand(n, generator=generator) < self.cfg.rr_prob
        if self.cfg.rr_degrees:
            angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(self.cfg.rr_degrees)
        else:
            angle = torch.full((n,), math.pi / 2)
        angle = torch.where(rotate, angle, torch.zeros(n))
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1] = scale[:, 0] * flip_x * cos, -scale[:, 0] * flip_x * sin
        theta[:, 1, 0], theta[:, 1, 1] = scale[:, 1] * flip_y * sin, scale[:, 1] * flip_y * cos
        theta[:, :, 2] = centre
        return F.affine_grid(theta, (n, self.channels, self.size, self.size), align_corners=False)

    # ------------------------------------------------------------------ photometric
    def color(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cfg, n, device = self.cfg, len(x), x.device

        def factors(strength: float) -> torch.Tensor:
            low = max(0.0, 1 - strength)
            return (low + (1 + strength - low) * torch.rand(n, generator=generator)).to(device).view(-1, 1, 1, 1)

        jitter = (torch.rand(n, generator=generator) < cfg.cj_prob).to(device).view(-1, 1, 1, 1)
        s = cfg.cj_strength
        brightness, contrast = factors(s * cfg.cj_bright), factors(s * cfg.cj_contrast)
        saturation, hue = factors(s * cfg.cj_sat), ((torch.rand(n, generator=generator) * 2 - 1) * s * cfg.cj_hue)
        gray_out = (torch.rand(n, generator=generator) < cfg.random_gray_scale).to(device).view(-1, 1, 1, 1)
        y = (x * brightness).clamp_(0, 1)
        mean = luminance(y).mean(dim=(1, 2, 3), keepdim=True)
        y = ((y - mean) * contrast + mean).clamp_(0, 1)
        if self.channels == 3:
            gray = luminance(y)
            y = ((y - gray) * saturation + gray).clamp_(0, 1)
            y = rotate_hue(y, hue.to(device)).clamp_(0, 1)
        x = torch.where(jitter, y, x)
        if self.channels == 3:
            x = torch.where(gray_out, luminance(x).expand_as(x), x)
        return x

    def blur(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Gaussian blur with probability ``gaussian_blur`` and sigma ~ U(sigmas) pixels (per image)."""
        n, c, h, w = x.shape
        apply = torch.rand(n, generator=generator) < self.cfg.gaussian_blur
        low, high = self.cfg.sigmas
        sigma = low + (high - low) * torch.rand(n, generator=generator)
        if not apply.any():
            return x
        radius = min(int(math.ceil(3 * high)), (min(h, w) - 1) // 2)
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None] ** 2))
        kernel = kernel / kernel.sum(1, keepdim=True)
        identity = (offsets == 0).float().expand(n, -1)
        kernel = torch.where(apply[:, None], kernel, identity).to(x.device)
        weight = kernel.repeat_interleave(c, dim=0)  # one kernel per image and channel
        y = x.reshape(1, n * c, h, w)
        y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), weight.view(n * c, 1, 1, -1), groups=n * c)
        y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), weight.view(n * c, 1, -1, 1), groups=n * c)
        return y.view(n, c, h, w)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma (as PIL's "L" conversion); a 1-channel image is its own luminance."""
    if x.shape[1] == 1:
        return x
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Shift hue by ``turns`` (fractions of a full turn, per image) as a rotation in YIQ space."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=x.device)
    from_yiq = torch.linalg.inv(to_yiq)
    angle = 2 * math.pi * turns
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(len(x), 3, 3, device=x.device)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    matrix = from_yiq @ rotation @ to_yiq  # [n, 3, 3]
    return torch.einsum("nij,njhw->nihw", matrix, x)


def lightly_transform(cfg: ViewConfig, size: int, mean, std, kind: str = "simclr"):
    """lightly's per-image transform with the same settings: ``SimCLRViewTransform`` (``kind="simclr"``)
    or BYOL's ``BYOLView1Transform`` / ``BYOLView2Transform`` (``"byol1"``, ``"byol2"``)."""
    from lightly.transforms.byol_transform import BYOLView1Transform, BYOLView2Transform
    from lightly.transforms.simclr_transform import SimCLRViewTransform

    common = dict(
        input_size=size,
        cj_prob=cfg.cj_prob,
        cj_strength=cfg.cj_strength,
        cj_bright=cfg.cj_bright,
        cj_contrast=cfg.cj_contrast,
        cj_sat=cfg.cj_sat,
        cj_hue=cfg.cj_hue,
        min_scale=cfg.min_scale,
        random_gray_scale=cfg.random_gray_scale,
        gaussian_blur=cfg.gaussian_blur,
        sigmas=cfg.sigmas,
        vf_prob=cfg.vf_prob,
        hf_prob=cfg.hf_prob,
        rr_prob=cfg.rr_prob,
        rr_degrees=cfg.rr_degrees or None,
        normalize={"mean": list(mean), "std": list(std)},
    )
    if kind == "simclr":
        return SimCLRViewTransform(**common)
    return (BYOLView2Transform if kind == "byol2" else BYOLView1Transform)(
        solarization_prob=cfg.solarization_prob, **common
    )


class LightlyViews:
    """Per-image views through a lightly transform (CPU, PIL): uint8 N×C×H×W → normalised float views.
    Its randomness is lightly's (global numpy/torch/random state), not the runner's generator."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        from PIL import Image

        arrays = images.permute(0, 2, 3, 1).cpu().numpy()
        pil = [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays]
        views = torch.stack([self.transform(p) for p in pil]).to(images.device)
        return views.contiguous(memory_format=torch.channels_last)


def make_views(cfg: ViewConfig, channels: int, size: int, mean, std, kind: str = "simclr"):
    """The view generator ``cfg.views`` names, for images of ``channels`` × ``size``²."""
    if cfg.views == "lightly":
        return LightlyViews(lightly_transform(cfg, size, mean, std, kind))
    return TensorViews(cfg, channels, size, mean, std)
