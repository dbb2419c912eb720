"""Preprocessing presets and their resolution, without torch (a suite file's ``preprocess`` is
checked before torch loads; :mod:`benchmarks.data.inputs` applies a resolved one).

Presets (any field can be overridden in a suite file, ``preprocess: {name: deit, hflip: 0}``):

- ``none`` — exactly the suite's historical inputs: squash-resize, values in [0, 1], no
  normalization, no augmentation (``x.float().div(255)`` is bit-identical to torchvision's
  ``ToTensor``).
- ``deit`` — the DeiT fine-tuning recipe the MEAT paper follows, geometric part: evaluation
  resize to 256 (crop_pct 0.875, bicubic) and centre crop 224; training RandomResizedCrop(224,
  scale (0.08, 1), ratio (3/4, 4/3), bicubic) and horizontal flip; ImageNet normalization.
  The random crop is drawn from the stored centre square (the image's borders outside it are not
  seen), and DeiT's heavier augmentations (RandAugment, mixup/cutmix, random erasing) are not
  applied: they change the targets or need per-image PIL work, and every strategy here shares one
  cross-entropy on hard labels.

``mean``/``std`` ``auto`` resolve to the backbone's timm ``pretrained_cfg`` when the run starts
from a checkpoint file of a timm model; the suite's own backbones and base pre-training here see
raw [0, 1] inputs, so for them ``auto`` means no normalization. Base pre-training is never
augmented.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

RESIZES = ("squash", "crop")
TRAIN_CROPS = ("none", "random_resized")
INTERPOLATIONS = ("bilinear", "bicubic")


class PreprocessError(ValueError):
    """A preprocessing setting is invalid."""


@dataclass(frozen=True)
class Preprocess:
    """A resolved preprocessing (stored in every run config as a dict)."""

    name: str = "none"
    resize: str = "squash"
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    train_crop: str = "none"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.0
    mean: tuple[float, ...] | str | None = None  # "auto" until resolved
    std: tuple[float, ...] | str | None = None

    def to_config(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def storage_size(self, img_size: int) -> int:
        """Side of the stored square image."""
        return img_size if self.resize == "squash" else round(img_size / self.crop_pct)


PRESETS = {
    "none": Preprocess(),
    "deit": Preprocess(name="deit", resize="crop", crop_pct=0.875, interpolation="bicubic",
                       train_crop="random_resized", hflip=0.5, mean="auto", std="auto"),
}
NONE = PRESETS["none"].to_config()


def resolve_preprocess(value, normalization: tuple | None = None) -> dict:
    """A preset name or a dict (``name`` = the preset it starts from, other keys override it) ->
    the full config dict. ``normalization`` = (mean, std) that ``auto`` stands for (None: no
    normalization). Raises :class:`PreprocessError` naming the bad field and the valid values."""
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise PreprocessError(f"preprocess must be a preset name ({', '.join(PRESETS)}) or a "
                              f"mapping, got {value!r}")
    name = value.get("name", "none")
    if name not in PRESETS:
        raise PreprocessError(f"unknown preprocess preset {name!r}; valid: {', '.join(PRESETS)}")
    valid = {f.name for f in fields(Preprocess)}
    unknown = sorted(set(value) - valid)
    if unknown:
        raise PreprocessError(f"unknown preprocess keys {unknown}; valid: {sorted(valid)}")
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    p = replace(PRESETS[name], **overrides)
    for key, choices in (("resize", RESIZES), ("train_crop", TRAIN_CROPS),
                         ("interpolation", INTERPOLATIONS)):
        if getattr(p, key) not in choices:
            raise PreprocessError(f"preprocess {key} {getattr(p, key)!r} is not one of "
                                  f"{', '.join(choices)}")
    if not 0 < p.crop_pct <= 1 or not 0 <= p.hflip <= 1:
        raise PreprocessError("preprocess crop_pct must be in (0, 1] and hflip in [0, 1]")
    if p.mean == "auto" or p.std == "auto":
        mean, std = normalization if normalization is not None else (None, None)
        p = replace(p, mean=mean if p.mean == "auto" else p.mean,
                    std=std if p.std == "auto" else p.std)
    if (p.mean is None) != (p.std is None):
        raise PreprocessError("preprocess mean and std are given together or not at all")
    if p.mean is not None:
        p = replace(p, mean=tuple(float(v) for v in p.mean), std=tuple(float(v) for v in p.std))
    return p.to_config()
