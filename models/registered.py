"""The suite's own backbone configurations, registered as timm models.

``timm.create_model("vit_micro", ...)`` works like any timm name once this module is imported
(``models.factory`` does). Each entry is a size configuration of a timm architecture (ViT, CaiT),
of the suite's LaViT (``models.lavit``) or of T2T-ViT (``models.t2t``, the official sizes), with
a description for ``run_benchmark.py backbones`` and, for official weights, their input
normalization; keyword arguments given to ``create_model`` override its defaults. Weights come only
from local files (``models.factory.load_checkpoint``): ``pretrained=True`` is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import timm
from timm.models import register_model

from models.lavit import LaViT, Stage
from models.t2t import IMAGENET, T2TViT


@dataclass(frozen=True)
class SuiteModel:
    family: str  # "vit", "cait", "lavit" or "t2t": which attention classes it is built with
    defaults: dict  # constructor arguments (sizes)
    description: str
    normalization: tuple | None = None  # (mean, std) official weights expect; None: raw [0, 1]


SUITE_MODELS: dict[str, SuiteModel] = {}


def _register(name: str, family: str, build: Callable, description: str,
              normalization: tuple | None = None, **defaults) -> None:
    SUITE_MODELS[name] = SuiteModel(family, defaults, description, normalization)

    def entrypoint(pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None,
                   cache_dir=None, **kwargs):
        if pretrained:
            raise ValueError(f"{name} has no downloadable weights; load a local checkpoint file")
        return build(**{**defaults, **kwargs})

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    register_model(entrypoint)


def _timm(arch: str) -> Callable:
    """Build as the timm architecture ``arch`` with every size overridden."""
    return lambda **kwargs: timm.create_model(arch, pretrained=False, **kwargs)


_register("vit_micro", "vit", _timm("vit_tiny_patch16_224"),
          "ViT 28x28, patch 7, dim 96, depth 4, 3 heads (CPU)",
          img_size=28, patch_size=7, embed_dim=96, depth=4, num_heads=3, in_chans=1)
_register("cait_micro", "cait", _timm("cait_xxs24_224"),
          "CaiT 28x28, patch 7, dim 96, 4 talking-heads + 2 class-attention layers, LayerScale "
          "(CPU)",
          img_size=28, patch_size=7, embed_dim=96, depth=4, depth_token_only=2, num_heads=3,
          in_chans=1)
_register("vit_nano", "vit", _timm("vit_tiny_patch16_224"),
          "ViT 28x28, patch 7, dim 64, depth 2, 2 heads (tests)",
          img_size=28, patch_size=7, embed_dim=64, depth=2, num_heads=2, in_chans=1)
_register("lavit_micro", "lavit", LaViT,
          "LaViT 28x28, patch 7, stages 4x4 tokens (dim 64) and 2x2 (dim 96), 2 layers each, "
          "1 vanilla + 1 less-attention (CPU)",
          img_size=28, patch_size=7, in_chans=1,
          stages=(Stage(depth=2, dim=64, num_heads=2, l_va=1),
                  Stage(depth=2, dim=96, num_heads=3, l_va=1)))
_register("lavit_tiny", "lavit", LaViT,
          "LaViT DeiT-Ti size: 224x224, patch 16, stages 14x14 and 7x7 tokens, dim 192, "
          "6 layers each (2 vanilla)",
          img_size=224, patch_size=16, in_chans=3,
          stages=(Stage(depth=6, dim=192, num_heads=3, l_va=2),
                  Stage(depth=6, dim=192, num_heads=3, l_va=2)))

for _depth, _dim, _heads, _mlp, _official in ((7, 256, 4, 2.0, "4.3M / 1.1G"),
                                              (10, 256, 4, 2.0, "5.9M / 1.5G"),
                                              (12, 256, 4, 2.0, "6.9M / 1.8G"),
                                              (14, 384, 6, 3.0, "21.5M / 4.8G")):
    _register(f"t2t_vit_{_depth}", "t2t", T2TViT,
              f"T2T-ViT-{_depth}: 224x224, Tokens-to-Token (Performer) to 14x14 tokens, "
              f"dim {_dim}, depth {_depth}, {_heads} heads (official params / MACs {_official})",
              normalization=IMAGENET, img_size=224, embed_dim=_dim, depth=_depth,
              num_heads=_heads, mlp_ratio=_mlp)
_register("t2t_micro", "t2t", T2TViT,
          "T2T-ViT 28x28: Tokens-to-Token to 2x2 tokens (token dim 16), dim 64, depth 2, 2 heads "
          "(tests)",
          img_size=28, in_chans=1, token_dim=16, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0)
