"""Check a pretrained checkpoint on its own classes: top-1 on an ImageNet-val-style folder.

    python -m benchmarks.measure.validate --backbone t2t_vit_12 \\
        --pretrained ~/weights/76.5_T2T_ViT_12.pth.tar --data ~/imagenet/val

prints the top-1 accuracy of the checkpoint's own classifier (official T2T-ViT-12: 76.5%), so a
user can confirm that a file loads as it was trained before running the paper protocol on it.
The folder has one sub-folder per class; classes are indexed in sorted folder order, which for
ImageNet's synset folders (n01440764, ...) is the standard class index. Evaluation preprocessing
as the checkpoints' own: resize the short side to round(img_size / crop_pct) (bicubic), centre
crop, the backbone's pretrained normalization (T2T-ViT: crop_pct 0.9, ImageNet mean/std; timm
models: their ``pretrained_cfg``). Bad input: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import timm
import torch
from torchvision import datasets, transforms

from models.factory import (
    BackboneError,
    create_pretrained_classifier,
    family,
    pretrained_normalization,
    resolve,
)

T2T_CROP_PCT = 0.9  # the official T2T-ViT default_cfg


def crop_pct(name: str) -> float:
    if family(name) == "t2t":
        return T2T_CROP_PCT
    cfg = timm.models.get_pretrained_cfg(name)
    return cfg.crop_pct if cfg is not None else 1.0


def evaluation_transform(img_size: int, crop: float, normalization, in_chans: int):
    steps = [transforms.Resize(round(img_size / crop),
                               interpolation=transforms.InterpolationMode.BICUBIC),
             transforms.CenterCrop(img_size)]
    if in_chans == 1:
        steps.append(transforms.Grayscale())
    steps.append(transforms.ToTensor())
    if normalization is not None:
        steps.append(transforms.Normalize(*normalization))
    return transforms.Compose(steps)


@torch.no_grad()
def top1(model: torch.nn.Module, loader, device: str) -> tuple[int, int]:
    """(correct, total) of ``model``'s argmax over the loader."""
    model.eval().to(device)
    correct = total = 0
    for x, y in loader:
        pred = model(x.to(device)).argmax(1).cpu()
        correct += int((pred == y).sum())
        total += len(y)
    return correct, total


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.measure.validate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", required=True, help="suite or timm backbone name")
    ap.add_argument("--pretrained", required=True, type=Path, help="local checkpoint file")
    ap.add_argument("--data", required=True, type=Path, help="folder with one sub-folder per class")
    ap.add_argument("--img-size", type=int, default=None, help="default: the backbone's")
    ap.add_argument("--crop-pct", type=float, default=None, help="default: the checkpoint's")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        _, kwargs = resolve(args.backbone, args.img_size)
        if not args.data.is_dir():
            raise BackboneError(f"data folder not found: {args.data} (one sub-folder per class)")
        crop = args.crop_pct if args.crop_pct is not None else crop_pct(args.backbone)
        if not 0 < crop <= 1:
            raise BackboneError(f"--crop-pct must be in (0, 1], got {crop}")
        model = create_pretrained_classifier(args.backbone, args.pretrained,
                                             img_size=args.img_size)
        img_size, in_chans = kwargs.get("img_size", 224), kwargs.get("in_chans", 3)
        data = datasets.ImageFolder(args.data, evaluation_transform(
            img_size, crop, pretrained_normalization(args.backbone), in_chans))
        if len(data.classes) > model.num_classes:
            raise BackboneError(f"{args.data} has {len(data.classes)} class folders, the "
                                f"checkpoint's head {model.num_classes} classes")
    except (BackboneError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size,
                                         num_workers=args.workers)
    correct, total = top1(model, loader, args.device)
    print(f"{args.backbone} {args.pretrained.name}: top-1 {100 * correct / total:.2f}% "
          f"({correct}/{total} images, {len(data.classes)} classes, crop_pct {crop})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
