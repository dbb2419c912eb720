"""Image transformations that make a task's domain: deterministic ones (rotation, inversion,
patch shuffling; ``mnist5k-domains``) and per-image random corruptions (affine jitter, clutter,
noise at low contrast; ``mnist5k-nuisance5``), all on float tensors (..., C, H, W) in [0, 1].

A transform is the same function on one image as on a batch, so in-memory tasks apply it once to
the whole tensor (:func:`benchmarks.data.streams._select`). The random corruptions draw from a
numpy ``RandomState`` in a fixed order, so a task's images are a pure function of the seed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- deterministic
def rotate(quarter_turns: int) -> Transform:
    """Rotate images by ``quarter_turns`` x 90 degrees counter-clockwise."""
    return lambda x: torch.rot90(x, quarter_turns, dims=(-2, -1))


def invert(x: torch.Tensor) -> torch.Tensor:
    """Swap ink and background: 1 - x."""
    return 1.0 - x


def patch_shuffle(grid: int, seed: int) -> Transform:
    """Cut images into a grid x grid of patches and permute them with one seeded permutation."""
    perm = torch.from_numpy(np.random.RandomState(seed).permutation(grid * grid))

    def apply(x: torch.Tensor) -> torch.Tensor:
        *lead, c, h, w = x.shape
        ph, pw = h // grid, w // grid
        p = x.reshape(*lead, c, grid, ph, grid, pw).movedim(-2, -3)  # (..., c, gy, gx, ph, pw)
        p = p.reshape(*lead, c, grid * grid, ph, pw)[..., perm, :, :]
        p = p.reshape(*lead, c, grid, grid, ph, pw).movedim(-3, -2)
        return p.reshape(*lead, c, h, w)

    return apply


def compose(*fs: Transform) -> Transform:
    def apply(x):
        for f in fs:
            x = f(x)
        return x

    return apply


# ----------------------------------------------------------------------------- nuisances
def random_affine(x: torch.Tensor, rs: np.random.RandomState, scale=(1.0, 1.0), rot=0.0,
                  shift: float | None = 0.0) -> torch.Tensor:
    """Per image: scale ~ U(scale), rotation ~ U(-rot, rot) degrees, translation ~ U(-t, t) in
    each axis (normalized coordinates, [-1, 1] = the canvas), with t = ``shift`` or, for None,
    1 - scale (the shrunk digit anywhere on the canvas). Bilinear, zero fill, clamped to [0, 1]."""
    n = len(x)
    s = rs.uniform(*scale, n)
    a = np.deg2rad(rs.uniform(-rot, rot, n))
    lim = 1 - s if shift is None else shift
    tx = rs.uniform(-1, 1, n) * lim
    ty = rs.uniform(-1, 1, n) * lim
    cos, sin = np.cos(a), np.sin(a)
    theta = np.stack([np.stack([cos / s, -sin / s, -tx / s], 1),
                      np.stack([sin / s, cos / s, -ty / s], 1)], 1)  # output -> input
    grid = F.affine_grid(torch.tensor(theta, dtype=torch.float32), list(x.shape),
                         align_corners=False)
    return F.grid_sample(x, grid, align_corners=False).clamp(0.0, 1.0)


def clutter(x: torch.Tensor, rs: np.random.RandomState, pool: torch.Tensor, k: int = 4,
            size: int = 9) -> torch.Tensor:
    """Paste ``k`` random size x size crops of random ``pool`` images (taken >= 4 px inside
    their border, so they hold strokes) at random places of every image (pixel-wise max)."""
    out = x.clone()
    n, _, h, w = x.shape
    for _ in range(k):
        src = rs.randint(0, len(pool), n)
        sy, sx = rs.randint(4, h - 4 - size, n), rs.randint(4, w - 4 - size, n)
        dy, dx = rs.randint(0, h - size + 1, n), rs.randint(0, w - size + 1, n)
        for i in range(n):
            frag = pool[src[i], :, sy[i]:sy[i] + size, sx[i]:sx[i] + size]
            region = out[i, :, dy[i]:dy[i] + size, dx[i]:dx[i] + size]
            out[i, :, dy[i]:dy[i] + size, dx[i]:dx[i] + size] = torch.maximum(region, frag)
    return out


def noise_low_contrast(x: torch.Tensor, rs: np.random.RandomState, std: float = 0.35,
                       contrast=(0.3, 0.7)) -> torch.Tensor:
    """bg + c * x + N(0, std^2) per pixel, clamped: c ~ U(contrast), bg ~ U(0, 1 - max c)."""
    c = torch.tensor(rs.uniform(*contrast, len(x)), dtype=torch.float32).view(-1, 1, 1, 1)
    bg = torch.tensor(rs.uniform(0, 1 - contrast[1], len(x)),
                      dtype=torch.float32).view(-1, 1, 1, 1)
    noise = torch.tensor(rs.normal(0, std, x.shape), dtype=torch.float32)
    return (bg + c * x + noise).clamp(0.0, 1.0)
