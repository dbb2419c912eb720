"""Base pre-training, cached on disk: every strategy of a sweep starts from the same checkpoint.

The backbone is trained with a linear head on the stream's base data (the paper's ImageNet
stage) once per (backbone config, base data, seed, recipe) and saved under
``<cache_dir>/<hash>.pt`` with timm-style keys (``head.*`` = the base head), so it loads through
the same local-checkpoint path as any timm file. Recipe: AdamW, cosine decay, no augmentation.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from models.factory import create_backbone, save_checkpoint
from models.losses import auxiliary_loss, loss_sources
from strategies.schedules import lr_factor

DEFAULT_RECIPE = {"epochs": 10, "lr": 1e-3, "weight_decay": 0.05, "batch_size": 64}


class Classifier(nn.Module):
    """Backbone + linear head, with timm's ``head`` key names."""

    def __init__(self, backbone: nn.Module, n_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, n_classes)

    def forward(self, x):
        return self.head(self.backbone(x))


@torch.inference_mode()
def accuracy(model: nn.Module, ds: Dataset, device, batch_size: int = 512) -> float:
    model.eval()
    correct = n = 0
    for x, y in DataLoader(ds, batch_size=batch_size):
        correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
        n += len(y)
    return correct / max(n, 1)


def train_classifier(model: nn.Module, train: Dataset, recipe: dict, seed: int, device) -> None:
    """Plain supervised training (cross-entropy + the backbone's own auxiliary loss, AdamW,
    per-step cosine decay)."""
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(train, batch_size=recipe["batch_size"], shuffle=True, generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"],
                            weight_decay=recipe["weight_decay"])
    total = recipe["epochs"] * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor("cosine", s, total))
    model.train()
    sources = loss_sources(model)
    for _ in range(recipe["epochs"]):
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
            extra = auxiliary_loss(sources)
            loss = loss if extra is None else loss + extra
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()


def cache_key(backbone: str, backbone_kwargs: dict, base: str, seed: int, recipe: dict) -> str:
    blob = json.dumps({"backbone": backbone, "kwargs": backbone_kwargs, "base": base,
                       "seed": seed, "recipe": recipe}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrained_checkpoint(
    backbone: str,
    backbone_kwargs: dict,
    base_name: str,
    base_train: Dataset,
    base_test: Dataset,
    n_classes: int,
    seed: int,
    cache_dir: str | Path,
    recipe: dict | None = None,
    device: str = "cpu",
) -> tuple[Path, dict]:
    """Path of the cached base checkpoint (training it first if absent) and its metadata."""
    recipe = {**DEFAULT_RECIPE, **(recipe or {})}
    key = cache_key(backbone, backbone_kwargs, base_name, seed, recipe)
    path = Path(cache_dir) / f"{backbone}-{key}.pt"
    if path.is_file():
        return path, torch.load(path, map_location="cpu", weights_only=True)["meta"]
    print(f"pre-training {backbone} on {base_name} (seed {seed}, {recipe['epochs']} epochs; once, "
          f"then cached in {cache_dir}) ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = Classifier(create_backbone(backbone, **backbone_kwargs), n_classes).to(device)
    train_classifier(model, base_train, recipe, seed, device)
    meta = {"base": base_name, "n_classes": n_classes, "seed": seed, "recipe": recipe,
            "base_test_acc": accuracy(model, base_test, device)}
    print(f"pre-trained {backbone} on {base_name} (seed {seed}) in "
          f"{time.perf_counter() - start:.0f} s: base test accuracy {meta['base_test_acc']:.1%}",
          file=sys.stderr, flush=True)
    # timm key layout: backbone params at top level, the base head under head.*
    model.cpu()
    state = {**model.backbone.state_dict(),
             **{f"head.{k}": v for k, v in model.head.state_dict().items()}}
    save_checkpoint(state, path, **meta)
    return path, meta
