"""What a run sets up before its first task: its process (seeds, TF32, determinism, DataLoader
workers) and its starting backbone (a local checkpoint, the backbone's timm hub weights, the cached
base pre-training, or random weights; and the random reference of the pre-training gain)."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

from atomicio import file_lock
from benchmarks.config import RunConfig
from benchmarks.data.streams import Stream
from benchmarks.pretrain import pretrained_checkpoint
from models.attention import set_dropkey
from models.factory import HUB, create_backbone, create_hub_backbone, resolve


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def random_backbone(config: RunConfig, stream: Stream):
    """A randomly initialized copy of the run's backbone (seeded by the run's seed, without
    touching the run's random state): the reference of the pre-training gain."""
    c, h, _ = stream.image_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return create_backbone(config.backbone, img_size=h, in_chans=c)


def data_key(config: RunConfig) -> str:
    """What a run's task datasets and their model inputs depend on, besides the backbone: the
    key of its frozen backbones' features (``strategies.features.FeatureCache``)."""
    fields = ("stream", "seed", "data_root", "img_size", "val_fraction", "preprocess",
              "precision", "tf32", "tuning")
    return json.dumps({k: getattr(config, k) for k in fields}, sort_keys=True)


def set_tf32(config: RunConfig) -> None:
    """TF32 matmuls and convolutions on CUDA as the config says (on by default: fp32 runs then
    use the tensor cores; bf16 autocast is unaffected)."""
    if str(config.device).startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = config.tf32
        torch.backends.cudnn.allow_tf32 = config.tf32


def set_determinism(config: RunConfig) -> None:
    """``torch.use_deterministic_algorithms`` as the config says (``deterministic``, off by
    default). On, a CUDA operation that has a deterministic kernel takes it instead of one that
    adds with atomics (whose order changes from call to call: attention and indexing backward,
    scatter-add, cuDNN's choices), and one without raises; ``CUBLAS_WORKSPACE_CONFIG=:4096:8``
    gives cuBLAS a fixed workspace per handle, which its bitwise reproducibility needs (torch
    refuses deterministic cuBLAS calls without it). Set before the run's first CUDA work."""
    if config.deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(config.deterministic)


def loader_workers(config: RunConfig) -> int:
    """DataLoader worker processes: the config's ``loader_workers`` if set; else none on the
    CPU (the training threads need the cores; the bundled data and the image cache are in
    memory) and, to feed a GPU, one per CPU this process may use (a Slurm job's or Ray task's
    share), at most 8."""
    if config.loader_workers is not None:
        return config.loader_workers
    if not str(config.device).startswith("cuda"):
        return 0
    return min(8, len(os.sched_getaffinity(0)))


def prepare_backbone(config: RunConfig, stream: Stream, cache_dir: Path):
    """The run's starting backbone (local checkpoint, the timm tag's hub weights, cached base
    pre-training, or random init), the size of the base model's own head (counted in storage
    like the paper's 1000-way) and what the record keeps of the start (``base``: the hub tag and
    revision, the base pre-training, or none)."""
    c, h, w = stream.image_shape
    kwargs = {"img_size": h, "in_chans": c}
    resolve(config.backbone, **kwargs)  # validates sizes before any training
    if config.pretrained == HUB:  # from the local Hugging Face cache, as the CLI checked
        backbone, base_head, weights = create_hub_backbone(config.backbone,
                                                           network=config.download, **kwargs)
        base_meta = weights.meta()
    else:
        backbone, base_head, base_meta = _local_backbone(config, stream, cache_dir, kwargs)
    if config.dropkey:  # a regularizer of the strategy's training, not of pre-training
        set_dropkey(backbone, config.dropkey, config.dropkey_schedule)
    return backbone, base_head, base_meta


def _local_backbone(config: RunConfig, stream: Stream, cache_dir: Path, kwargs: dict):
    """(backbone, base head size, base meta) from a local checkpoint file, the cached base
    pre-training (trained first if absent), or random weights."""
    ckpt, base_meta, base_head = config.pretrained, None, 0
    if ckpt is None and stream.base is not None:
        recipe = {"epochs": config.base_epochs, "batch_size": config.batch_size}
        # concurrent runs (workers, Ray, Slurm) wait for one pre-training, then share it; runs
        # of other seeds or streams pre-train at the same time
        lock = f".{config.backbone}-{stream.name}-seed{config.seed}.lock"  # names: [a-z0-9-]
        with file_lock(Path(cache_dir) / lock):
            ckpt, base_meta = pretrained_checkpoint(
                config.backbone, kwargs, f"{stream.name}:{stream.base.name}",
                stream.base.train, stream.base.test, stream.base.n_classes, config.seed,
                cache_dir, recipe, config.device)
    if ckpt is None:  # nothing to start from: the results say nothing about pre-training
        base_meta = {"base": "none"}
        print(f"warning: {config.backbone} starts from random weights: stream {stream.name!r} "
              "has no base to pre-train on and no --pretrained FILE was given", file=sys.stderr,
              flush=True)
    backbone = create_backbone(config.backbone, pretrained=ckpt, **kwargs)
    if ckpt is not None:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state))
        base_head = sum(v.numel() for k, v in state.items() if k.startswith("head."))
    return backbone, base_head, base_meta
