"""One factory for every backbone: tiny CPU configs and any timm ViT/DeiT name.

``create_backbone(name, img_size=..., in_chans=..., pretrained=PATH)`` returns a timm model with
``num_classes=0`` (its forward returns the pooled features, ``model.num_features`` wide).
``pretrained`` is a local file (a timm checkpoint or one of ours) or ``"hub"``: the backbone's
timm pretrained tag from the local Hugging Face cache, filled from the network only on an opt-in
(``--download``, or ``HF_HUB_OFFLINE=0``: :func:`hub_weights`). Tiny configs are timm architectures
with small overrides, so they are ordinary timm models.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
from timm.models import cait, deit, vision_transformer
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from atomicio import atomic_write
from models import anatomy, t2t
from models.attention import (
    AttentionHooks,
    MaskableAttention,
    MaskableClassAttn,
    MaskableTalkingHeadAttn,
    set_prefix_tokens,
)
from models.registered import SUITE_MODELS


class BackboneError(ValueError):
    """A backbone cannot be built as asked (unknown name, bad sizes, bad checkpoint)."""


FAMILIES = ("vit", "deit", "cait")  # timm families whose names the suite accepts


def family(name: str) -> str:
    """The backbone's family: a registered suite model's, else the timm name's prefix."""
    return SUITE_MODELS[name].family if name in SUITE_MODELS else name.split("_")[0]


def resolve(name: str, img_size: int | None = None, in_chans: int | None = None,
            **overrides) -> tuple[str, dict]:
    """(architecture, kwargs) for a backbone name; validates the name and the sizes."""
    if name in SUITE_MODELS:
        arch, kwargs = name, dict(SUITE_MODELS[name].defaults)
    elif family(name) in FAMILIES and timm.is_model(name):
        arch, kwargs = name, {}
    else:
        raise BackboneError(
            f"unknown backbone {name!r}; valid: {', '.join(SUITE_MODELS)} or a timm "
            f"vit_*/deit_*/cait_* name (timm.list_models('vit_*'))"
        )
    if img_size is not None:
        kwargs["img_size"] = img_size
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    kwargs.update(overrides)
    patch = kwargs.get("patch_size") or _default_patch_size(arch)
    size = kwargs.get("img_size", 224)
    if family(name) == "t2t":  # soft splits with padding: any size gives a square token grid
        if t2t.grid_side(size) < 1:
            raise BackboneError(f"image size {size} is too small for {name!r}'s soft splits")
    elif size % patch:
        raise BackboneError(
            f"patch size {patch} of backbone {name!r} does not divide image size {size}; "
            f"use an image size that is a multiple of {patch} (a local dataset: --img-size "
            f"{max(patch, size // patch * patch)})"
        )
    if "stages" in kwargs:  # a hierarchical backbone (LaViT)
        halvings = len(kwargs["stages"]) - 1
        if (size // patch) % 2**halvings:
            raise BackboneError(
                f"backbone {name!r} halves its {size // patch}x{size // patch} token grid "
                f"{halvings} time(s); use an image size whose grid is divisible by {2**halvings}"
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
    """Build backbone ``name`` (features only) and optionally load a local checkpoint file, or
    with ``pretrained="hub"`` its timm pretrained tag (:func:`create_hub_backbone`)."""
    if isinstance(pretrained, str) and pretrained == HUB:
        return create_hub_backbone(name, img_size=img_size, in_chans=in_chans, **overrides)[0]
    arch, kwargs = resolve(name, img_size, in_chans, **overrides)
    model = timm.create_model(arch, pretrained=False, num_classes=0,
                              **maskable_attention_kwargs(family(name)), **kwargs)
    set_prefix_tokens(model)
    if pretrained is not None:
        load_checkpoint(model, pretrained)
    return model


def maskable_attention_kwargs(family: str) -> dict:
    """Constructor arguments that build a family with the suite's maskable attention classes
    (``models.attention``) in place of timm's: CaiT takes its two attention blocks, ViT/DeiT
    its attention layer; LaViT is built with its own."""
    if family == "cait":
        return {"attn_block": MaskableTalkingHeadAttn, "attn_block_token_only": MaskableClassAttn}
    if family == "lavit":
        return {}
    return {"attn_layer": MaskableAttention}


def pretrained_normalization(name: str) -> tuple[tuple, tuple] | None:
    """(mean, std) that a model's pretrained weights expect (a timm model's ``pretrained_cfg``,
    the official one for T2T-ViT); None for the suite's own small configs, which are pre-trained
    here on raw [0, 1] inputs."""
    if name in SUITE_MODELS:
        return SUITE_MODELS[name].normalization
    cfg = timm.models.get_pretrained_cfg(name)
    return (tuple(cfg.mean), tuple(cfg.std)) if cfg is not None else None


# timm's own key remapping per architecture (most specific class first): position embeddings
# resampled, older checkpoint layouts renamed
CHECKPOINT_FILTERS = (
    (t2t.T2TViT, t2t.checkpoint_filter_fn),
    (deit.VisionTransformerDistilled, deit.checkpoint_filter_fn),
    (vision_transformer.VisionTransformer, vision_transformer.checkpoint_filter_fn),
    (cait.Cait, cait.checkpoint_filter_fn),
)


def read_checkpoint(model: nn.Module, path: str | Path) -> dict:
    """A local checkpoint's state_dict (timm file or ours) in ``model``'s layout.

    Accepts a raw state_dict or one under ``state_dict``/``model`` (a training script's file,
    with its ``args`` namespace, loads too; nothing else is unpickled); position embeddings are
    resampled and layouts renamed by the architecture's own filter (``CHECKPOINT_FILTERS``).
    """
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"pretrained checkpoint not found: {path}")
    with torch.serialization.safe_globals([argparse.Namespace]):  # training scripts' `args`
        state = timm.models.load_state_dict(str(path), weights_only=True)
    filter_fn = next((f for cls, f in CHECKPOINT_FILTERS if isinstance(model, cls)), None)
    return state if filter_fn is None else filter_fn(state, model)


HEAD_PREFIXES = ("head.", "fc_norm_head.")


def load_checkpoint(model: nn.Module, path: str | Path, keep_head: bool = False) -> None:
    """Load a local checkpoint (:func:`read_checkpoint`) into ``model``: a features-only one
    (classifier keys dropped), or with ``keep_head`` one built with the checkpoint's classes.
    Every parameter must be present: a partial load is an error, not a silent mix."""
    state = read_checkpoint(model, path)
    if not keep_head:
        state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BackboneError(
            f"checkpoint {path} does not fit this backbone: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )


HUB = "hub"  # ``--pretrained hub``: the backbone's timm pretrained tag (its hub weights)
# T2T-ViT's official ImageNet checkpoints (timm hosts none): the files to give --pretrained
T2T_RELEASE = "https://github.com/yitu-opensource/T2T-ViT/releases/download/main/"
T2T_FILES = {"t2t_vit_7": "71.7_T2T_ViT_7.pth.tar", "t2t_vit_10": "75.2_T2T_ViT_10.pth.tar",
             "t2t_vit_12": "76.5_T2T_ViT_12.pth.tar", "t2t_vit_14": "81.5_T2T_ViT_14.pth.tar"}


@dataclass(frozen=True)
class HubWeights:
    """A timm pretrained tag's weights file in the local Hugging Face cache."""

    tag: str  # timm's <architecture>.<tag>, e.g. deit_tiny_patch16_224.fb_in1k
    repo: str  # its hub repository, e.g. timm/deit_tiny_patch16_224.fb_in1k
    path: Path  # <cache>/models--<repo>/snapshots/<revision>/<file>

    def meta(self) -> dict:
        """What a run records of its start (the record's ``base``)."""
        return {"base": "hub", "tag": self.tag, "repo": self.repo,
                "revision": self.path.parent.name, "file": self.path.name}


def hub_pretrained_cfg(name: str):
    """timm's pretrained cfg of backbone ``name``'s default tag, which must have hub weights;
    a BackboneError that names the offline alternative otherwise (T2T-ViT: the official file)."""
    if name in SUITE_MODELS:
        if name in T2T_FILES:
            raise BackboneError(
                f"--pretrained hub: timm hosts no T2T-ViT weights; download the official "
                f"release {T2T_RELEASE}{T2T_FILES[name]} and give --pretrained FILE")
        raise BackboneError(
            f"--pretrained hub: {name} is one of the suite's own configs (models/registered.py), "
            "with no hub weights; give --pretrained FILE, or leave --pretrained out to pre-train "
            "it on the stream's base")
    arch, _ = resolve(name)
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None or not cfg.hf_hub_id:
        raise BackboneError(f"--pretrained hub: timm has no hub weights for {name}; give "
                            "--pretrained FILE")
    return cfg


def _hub_files(filename: str | None) -> list[str]:
    """The files timm reads for a hub tag, in its order: the safetensors version of a pickle
    first (``timm.models._hub.load_state_dict_from_hf``)."""
    filename = filename or "pytorch_model.bin"
    safe = {"pytorch_model.bin": "model.safetensors",
            "open_clip_pytorch_model.bin": "open_clip_model.safetensors"}.get(filename)
    if safe is None and filename.endswith(".bin"):
        safe = filename[:-4] + ".safetensors"
    return [filename] if safe is None else [safe, filename]


def hub_weights(name: str, *, fetch: bool = False, network: bool = False) -> HubWeights | None:
    """Backbone ``name``'s hub weights in the local Hugging Face cache (huggingface_hub's own
    look-up, no network). Not cached, the network may be used when ``network`` (the caller's
    opt-in: ``--download``) or ``HF_HUB_OFFLINE=0`` says so; if not, a one-line BackboneError
    naming the offline alternative. Then ``fetch`` downloads the file into the cache (a failure
    is the same kind of error), and without it the answer is None (not cached, fetchable)."""
    cfg = hub_pretrained_cfg(name)
    tag = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    repo, _, revision = cfg.hf_hub_id.partition("@")
    files = _hub_files(cfg.hf_hub_filename)
    for filename in files:
        cached = try_to_load_from_cache(repo, filename, revision=revision or None)
        if isinstance(cached, str):
            return HubWeights(tag, repo, Path(cached))
    if not network and hf_constants.HF_HUB_OFFLINE:
        raise BackboneError(
            f"--pretrained hub: {tag} is not in the local Hugging Face cache "
            f"({hf_constants.HF_HUB_CACHE}) and the network is off (HF_HUB_OFFLINE=1); give "
            "--pretrained FILE, or --download on a connected machine to fetch it")
    if not fetch:
        return None
    try:
        return HubWeights(tag, repo, _download(repo, files, revision or None))
    except Exception as e:  # the hub unreachable, no such repository, ...: one line
        reason = ("the hub is unreachable" if isinstance(e, LocalEntryNotFoundError) else
                  (str(e).strip() or type(e).__name__).splitlines()[0])
        raise BackboneError(f"--pretrained hub: cannot download {tag} from the Hugging Face hub "
                            f"({reason}); give --pretrained FILE, or fetch it on a connected "
                            "machine into the Hugging Face cache this one reads") from e


def _download(repo: str, files: list[str], revision: str | None) -> Path:
    """The first of ``files`` that the hub repository has, downloaded into the local cache.
    huggingface_hub's offline mode is lifted for these calls only (the caller opted in), and its
    retry warnings are silenced: a failure is one line."""
    logger = logging.getLogger("huggingface_hub")
    level, offline = logger.level, hf_constants.HF_HUB_OFFLINE
    logger.setLevel(logging.ERROR)
    hf_constants.HF_HUB_OFFLINE = False
    try:
        for filename in files[:-1]:
            try:
                return Path(hf_hub_download(repo, filename, revision=revision))
            except EntryNotFoundError as e:  # not in the repository: timm's next file
                if isinstance(e, LocalEntryNotFoundError):  # the hub is unreachable
                    raise
        return Path(hf_hub_download(repo, files[-1], revision=revision))
    finally:
        hf_constants.HF_HUB_OFFLINE = offline
        logger.setLevel(level)


def create_hub_backbone(name: str, *, img_size: int | None = None, in_chans: int | None = None,
                        network: bool = False, **overrides) -> tuple[nn.Module, int, HubWeights]:
    """Backbone ``name`` (features only) with its timm pretrained tag's weights: the file in the
    local Hugging Face cache (:func:`hub_weights`; downloaded first only when the caller opted
    in, ``network`` or ``HF_HUB_OFFLINE=0``), loaded by ``timm.create_model(...,
    pretrained=True)`` with timm's own filter (position embeddings resampled, input channels
    adapted). timm reads that very file (the one the record names; no hub look-up at load
    time). It is built with the tag's classifier, so the load is strict as a local file's (every
    parameter present), then the head is dropped; returns (model, the head's parameter count,
    counted in storage like a local file's ``head.*``, the weights)."""
    weights = hub_weights(name, fetch=True, network=network)
    arch, kwargs = resolve(name, img_size, in_chans, **overrides)
    cfg = timm.models.get_pretrained_cfg(arch)
    local = {"file": str(weights.path), "source": None, "custom_load": False}
    try:
        model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=local,
                                  num_classes=cfg.num_classes or 0,
                                  **maskable_attention_kwargs(family(name)), **kwargs)
    except RuntimeError as e:  # a strict load that does not fit
        raise BackboneError(f"--pretrained hub: {weights.tag} does not fit backbone {name}: "
                            f"{str(e).strip().splitlines()[0]}") from e
    base_head = sum(v.numel() for k, v in model.state_dict().items() if k.startswith("head."))
    model.reset_classifier(0)
    set_prefix_tokens(model)
    return model, base_head, weights


def create_pretrained_classifier(name: str, pretrained: str | Path, *,
                                 img_size: int | None = None, in_chans: int | None = None
                                 ) -> nn.Module:
    """Backbone ``name`` with the classifier head its checkpoint was trained with (e.g. the
    1000 ImageNet classes), to check a checkpoint on its own task
    (``benchmarks.measure.validate``)."""
    arch, kwargs = resolve(name, img_size, in_chans)
    probe = create_backbone(name, img_size=img_size, in_chans=in_chans)
    head = read_checkpoint(probe, pretrained).get("head.weight")
    if head is None:
        raise BackboneError(f"checkpoint {pretrained} has no classifier head (head.weight)")
    model = timm.create_model(arch, pretrained=False, num_classes=head.shape[0],
                              **maskable_attention_kwargs(family(name)), **kwargs)
    set_prefix_tokens(model)
    load_checkpoint(model, pretrained, keep_head=True)
    return model


def save_checkpoint(state_dict: dict, path: str | Path, **meta) -> None:
    """Save a state_dict (plus metadata) atomically, loadable by :func:`load_checkpoint`.
    Tensors are saved detached and on the CPU, so a GPU run's files load on a CPU-only machine
    (``torch.load`` otherwise restores them to the device that saved them)."""
    state_dict = {k: v.detach().cpu() for k, v in state_dict.items()}
    atomic_write(Path(path), lambda f: torch.save({"state_dict": state_dict, "meta": meta}, f))



SHOWCASE_TIMM = ("deit_tiny_patch16_224", "deit_small_patch16_224", "vit_base_patch16_224",
                 "cait_xxs24_224")


def backbone_names() -> list[str]:
    """The suite's named configs, then well-known timm names (any timm vit_*/deit_*/cait_* name
    works)."""
    return [*SUITE_MODELS, *SHOWCASE_TIMM]


def timm_family_count() -> int:
    return sum(len(timm.list_models(f"{f}_*")) for f in FAMILIES)


def backbone_card(name: str) -> dict:
    """Parameters, forward FLOPs of one image at the backbone's input size (counted by
    ``torch.utils.flop_counter``) and whether every attention layer takes the suite's attention
    hooks (token masks and DropKey both act through them)."""
    model = create_backbone(name).eval().requires_grad_(False)
    arch, kwargs = resolve(name)
    img = kwargs.get("img_size", 224)
    chans = kwargs.get("in_chans", 3)
    counter = FlopCounterMode(display=False)
    with counter:  # (not under no_grad: timm's CaiT then trips the counter's module tracker)
        model(torch.zeros(1, chans, img, img))
    n_attn = sum(isinstance(m, AttentionHooks) for m in model.modules())
    n_blocks = len(anatomy.blocks(model))
    return {
        "name": name, "arch": arch, "img_size": img, "in_chans": chans,
        "tokens": anatomy.num_patches(model),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "gflops": counter.get_total_flops() / 1e9,
        "token_masks": n_attn == n_blocks, "dropkey": n_attn == n_blocks,
        "description": SUITE_MODELS[name].description if name in SUITE_MODELS else "timm",
    }
