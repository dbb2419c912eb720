"""What an image goes through between its file and the backbone: storage and device parts.

A preprocessing is split in two at the image cache (:mod:`benchmarks.data.imagecache`):

- **storage** (:func:`storage_transform`, PIL, once per image when the cache is built): either
  ``squash`` — ``Resize((s, s))``, what the suite always did — or ``crop`` — shorter side to
  ``round(img_size / crop_pct)``, then the centre square of that side (DeiT's evaluation resize,
  kept square so a cache is one uint8 array).
- **device** (:class:`InputPipeline`, on batches already on the run's device): uint8 -> float,
  the training crop (``random_resized``: RandomResizedCrop(img_size, scale, ratio) with a
  horizontal flip of probability ``hflip``, one affine ``grid_sample`` per batch) or the centre
  ``img_size`` crop at evaluation, then ``(x - mean) / std``.

The presets (``none``, ``deit``) and their resolution are in
:mod:`benchmarks.data.preprocess`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from benchmarks.data.preprocess import Preprocess
from models.inputs import to_float


def storage_transform(preprocess: dict, img_size: int):
    """The PIL part: what the cache stores for every image (see the module docstring)."""
    from torchvision import transforms as T

    p = Preprocess(**preprocess)
    if p.resize == "squash":  # torchvision's default (bilinear, antialiased): the suite's inputs
        return T.Resize((img_size, img_size))
    size = p.storage_size(img_size)
    mode = T.InterpolationMode(p.interpolation)
    return T.Compose([T.Resize(size, interpolation=mode), T.CenterCrop(size)])


class InputPipeline:
    """The device part: ``pipeline(x, train)`` for a batch ``x`` (uint8 in [0, 255] or float in
    [0, 1], (B, C, S, S)) already on its device -> float (B, C, img_size, img_size)."""

    def __init__(self, preprocess: dict, img_size: int):
        self.p = Preprocess(**{k: tuple(v) if isinstance(v, list) else v
                               for k, v in preprocess.items()})
        self.img_size = img_size
        self._norm: dict = {}

    def __call__(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        if train and (self.p.train_crop == "random_resized" or self.p.hflip > 0):
            x = self.random_crop_flip(to_float(x))
        else:
            x = self.view(x)
        if self.p.mean is not None:
            mean, std = self.normalization(x)
            x = (x - mean) / std
        return x

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """An image (or batch) as evaluation sees it, before normalization: float in [0, 1],
        centre ``img_size`` crop (what figures show)."""
        x = to_float(x)
        return x if x.shape[-2:] == (self.img_size, self.img_size) else self.center_crop(x)

    def normalization(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (x.device, x.shape[1])
        if key not in self._norm:
            mean = torch.tensor(self.p.mean, device=x.device).reshape(1, -1, 1, 1)
            std = torch.tensor(self.p.std, device=x.device).reshape(1, -1, 1, 1)
            if mean.shape[1] != x.shape[1]:
                raise ValueError(f"normalization has {mean.shape[1]} channels, images "
                                 f"{x.shape[1]}")
            self._norm[key] = (mean, std)
        return self._norm[key]

    def center_crop(self, x: torch.Tensor) -> torch.Tensor:
        """torchvision's CenterCrop offsets: round((S - size) / 2)."""
        h, w, s = x.shape[-2], x.shape[-1], self.img_size
        top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
        return x[..., top:top + s, left:left + s]

    def crop_boxes(self, n: int, h: int, w: int, device) -> torch.Tensor:
        """(n, 4) boxes (top, left, height, width) drawn as torchvision's RandomResizedCrop
        draws them: up to 10 tries of area ~ U(scale) x h w and log-ratio ~ U(log ratio) that
        fit the image, else the whole image cut to the ratio range."""
        tries = 10
        p = self.p
        area = h * w * torch.empty(n, tries, device=device).uniform_(*p.scale)
        log_r = torch.empty(n, tries, device=device).uniform_(math.log(p.ratio[0]),
                                                              math.log(p.ratio[1]))
        r = torch.exp(log_r)
        cw = torch.sqrt(area * r).round()
        ch = torch.sqrt(area / r).round()
        ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
        first = torch.where(ok.any(1), ok.float().argmax(1), -1)  # first fitting try
        idx = first.clamp_min(0).unsqueeze(1)
        cw, ch = cw.gather(1, idx).squeeze(1), ch.gather(1, idx).squeeze(1)
        # fallback (torchvision's): the whole image, cut to the nearest allowed ratio
        if w / h < p.ratio[0]:
            fw, fh = w, round(w / p.ratio[0])
        elif w / h > p.ratio[1]:
            fw, fh = round(h * p.ratio[1]), h
        else:
            fw, fh = w, h
        fell = first < 0
        cw = torch.where(fell, torch.full_like(cw, fw), cw)
        ch = torch.where(fell, torch.full_like(ch, fh), ch)
        top = torch.floor(torch.rand(n, device=device) * (h - ch + 1))
        left = torch.floor(torch.rand(n, device=device) * (w - cw + 1))
        top = torch.where(fell, torch.floor((h - ch) / 2), top)
        left = torch.where(fell, torch.floor((w - cw) / 2), left)
        return torch.stack([top, left, ch, cw], dim=1)

    def random_crop_flip(self, x: torch.Tensor) -> torch.Tensor:
        """RandomResizedCrop (or the centre crop) plus a random horizontal flip, as one affine
        ``grid_sample`` over the batch (align_corners=False pixel geometry)."""
        n, _, h, w = x.shape
        s = self.img_size
        if self.p.train_crop == "random_resized":
            top, left, ch, cw = self.crop_boxes(n, h, w, x.device).unbind(1)
        else:
            top = torch.full((n,), float(int(round((h - s) / 2.0))), device=x.device)
            left = torch.full((n,), float(int(round((w - s) / 2.0))), device=x.device)
            ch = cw = torch.full((n,), float(min(s, h)), device=x.device)
        flip = torch.rand(n, device=x.device) < self.p.hflip
        sign = 1.0 - 2.0 * flip.to(x.dtype)
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = cw / w * sign
        theta[:, 0, 2] = (2 * left + cw) / w - 1
        theta[:, 1, 1] = ch / h
        theta[:, 1, 2] = (2 * top + ch) / h - 1
        grid = F.affine_grid(theta, [n, x.shape[1], s, s], align_corners=False)
        out = F.grid_sample(x, grid, mode=self.p.interpolation, padding_mode="border",
                            align_corners=False)
        return out.clamp_(0.0, 1.0)
