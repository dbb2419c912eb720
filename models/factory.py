"""One factory for every backbone: tiny CPU configs and any timm ViT/DeiT name.

``create_backbone(name, img_size=..., in_chans=..., pretrained=PATH)`` returns a timm model with
``num_classes=0`` (its forward returns the pooled features, ``model.num_features`` wide).
``pretrained`` is always a local file (a timm checkpoint or one of ours); the network is never
used. Tiny configs are timm architectures with small overrides, so they are ordinary timm models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from torch import nn


class BackboneError(ValueError):
    """A backbone cannot be built as asked (unknown name, bad sizes, bad checkpoint)."""


@dataclass(frozen=True)
class TinyConfig:
    """A small named config: a timm architecture plus keyword overrides."""

    arch: str
    kwargs: dict = field(default_factory=dict)
    description: str = ""


TINY_CONFIGS: dict[str, TinyConfig] = {
    "vit_micro": TinyConfig(
        "vit_tiny_patch16_224",
        dict(img_size=28, patch_size=7, embed_dim=96, depth=4, num_heads=3, in_chans=1),
        "ViT 28x28, patch 7, dim 96, depth 4, 3 heads (CPU)",
    ),
    "vit_nano": TinyConfig(
        "vit_tiny_patch16_224",
        dict(img_size=28, patch_size=7, embed_dim=64, depth=2, num_heads=2, in_chans=1),
        "ViT 28x28, patch 7, dim 64, depth 2, 2 heads (tests)",
    ),
}

FAMILIES = ("vit", "deit")


def resolve(name: str, img_size: int | None = None, in_chans: int | None = None,
            **overrides) -> tuple[str, dict]:
    """(timm architecture, kwargs) for a backbone name; validates the name and the sizes."""
    if name in TINY_CONFIGS:
        arch, kwargs = TINY_CONFIGS[name].arch, dict(TINY_CONFIGS[name].kwargs)
    elif name.split("_")[0] in FAMILIES and timm.is_model(name):
        arch, kwargs = name, {}
    else:
        raise BackboneError(
            f"unknown backbone {name!r}; valid: {', '.join(TINY_CONFIGS)} or a timm "
            f"vit_*/deit_* name (timm.list_models('vit_*'))"
        )
    if img_size is not None:
        kwargs["img_size"] = img_size
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    kwargs.update(overrides)
    patch = kwargs.get("patch_size") or _default_patch_size(arch)
    size = kwargs.get("img_size", 224)
    if size % patch:
        raise BackboneError(
            f"patch size {patch} of backbone {name!r} does not divide image size {size}; "
            f"use an image size that is a multiple of {patch}"
        )
    return arch, kwargs


def _default_patch_size(arch: str) -> int:
    """timm ViT/DeiT names carry their patch size ("..._patch16_..."); 16 otherwise."""
    for part in arch.split("_"):
        if part.startswith("patch") and part[5:].isdigit():
            return int(part[5:])
    return 16


def create_backbone(
    name: str,
    *,
    img_size: int | None = None,
    in_chans: int | None = None,
    pretrained: str | Path | None = None,
    **overrides,
) -> nn.Module:
    """Build backbone ``name`` (features only) and optionally load a local checkpoint file."""
    arch, kwargs = resolve(name, img_size, in_chans, **overrides)
    model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    if pretrained is not None:
        load_checkpoint(model, pretrained)
    return model


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a local checkpoint (timm file or ours) into a features-only model.

    Accepts a raw state_dict or one under ``state_dict``/``model``; classifier keys are dropped,
    position embeddings are resampled by the architecture's own timm filter when sizes differ.
    Every backbone parameter must be present: a partial load is an error, not a silent mix.
    """
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"pretrained checkpoint not found: {path}")
    state = timm.models.load_state_dict(str(path), weights_only=True)
    filter_fn = getattr(__import__(type(model).__module__, fromlist=["_"]),
                        "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, model)
    head_keys = {k for k in state if k.startswith(("head.", "fc_norm_head."))}
    state = {k: v for k, v in state.items() if k not in head_keys}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BackboneError(
            f"checkpoint {path} does not fit this backbone: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )


def save_checkpoint(state_dict: dict, path: str | Path, **meta) -> None:
    """Save a state_dict (plus metadata) atomically, loadable by :func:`load_checkpoint`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"state_dict": state_dict, "meta": meta}, tmp)
    tmp.replace(path)

