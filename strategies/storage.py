"""Storage accounting: what must be kept to predict task t later, in bits and MiB.

Counted as the MEAT paper counts model size: the base model in fp32 (with its original head)
plus, per task, everything the strategy keeps for that task — its head in fp32, binary masks or
gates at 1 bit per entry, float per-task parameters at 32 bits, a full fp32 backbone copy for
``individual`` — plus what it keeps once for all tasks (``shared``: e.g. HAT's shared adapters).
The base model is the pre-trained backbone as it was before the strategy added anything to it.
MiB = 2**20 bytes. Three views per task:

- ``bits``: the theoretical count (sum of entries x bits per entry);
- ``packed_bytes``: each item stored on its own, bit-packed (ceil(bits / 8) per item);
- ``file_bytes``: the size of the per-task file the run actually saved (filled by the runner).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from torch import nn

MIB = 2**20
FP32 = 32


@dataclass(frozen=True)
class StorageItem:
    """``entries`` values of ``bits`` bits each, kept for one task (e.g. a mask or a head)."""

    name: str
    entries: int
    bits: int

    @property
    def total_bits(self) -> int:
        return self.entries * self.bits

    @property
    def packed_bytes(self) -> int:
        return math.ceil(self.total_bits / 8)


def head_items(num_features: int, n_classes: int) -> list[StorageItem]:
    """A task's linear head in fp32: weight and bias."""
    return [StorageItem("head", n_classes * (num_features + 1), FP32)]


def head_only_storage(backbone: nn.Module, n_classes: int, hp: dict) -> list[StorageItem]:
    """The bill of a strategy that keeps nothing per task but its head."""
    return head_items(backbone.num_features, n_classes)


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def task_bill(items: Sequence[StorageItem]) -> dict:
    """One task's storage: total bits, packed bytes, MiB and the itemized list."""
    bits = sum(i.total_bits for i in items)
    return {
        "bits": bits,
        "packed_bytes": sum(i.packed_bytes for i in items),
        "mib": bits / 8 / MIB,
        "items": [asdict(i) for i in items],
    }


def storage_summary(
    backbone_params: int, base_head_params: int, per_task: Sequence[Sequence[StorageItem]],
    shared: Sequence[StorageItem] = (),
) -> dict:
    """The run's bill: base model (``backbone_params`` of the pre-trained backbone + its head) +
    shared items + per-task items; totals in bits and MiB, per task % of the backbone."""
    backbone_bits = backbone_params * FP32
    base_bits = backbone_bits + base_head_params * FP32
    shared_bill = task_bill(shared)
    bills = [task_bill(items) for items in per_task]
    per_task_bits = [b["bits"] for b in bills]
    total_bits = base_bits + shared_bill["bits"] + sum(per_task_bits)
    return {
        "base_bits": base_bits,
        "base_mib": base_bits / 8 / MIB,
        "shared_bits": shared_bill["bits"],
        "shared_mib": shared_bill["mib"],
        "shared_items": shared_bill["items"],
        "per_task_bits": per_task_bits,
        "per_task_mib": [b / 8 / MIB for b in per_task_bits],
        "per_task_packed_bytes": [b["packed_bytes"] for b in bills],
        "per_task_pct_of_backbone": [100.0 * b / backbone_bits for b in per_task_bits],
        "per_task_items": [b["items"] for b in bills],
        "total_bits": total_bits,
        "total_mib": total_bits / 8 / MIB,
    }


def strategy_bill(info, backbone: nn.Module, classes: Sequence[int], base_head_params: int,
                  hparams: dict | None = None) -> dict:
    """The bill of a registered strategy (``strategies.registry.StrategyInfo``) after the base
    model and one task per entry of ``classes``, computed without training."""
    hp = info.hparams if hparams is None else hparams
    summary = storage_summary(param_count(backbone), base_head_params,
                              [info.storage(backbone, n, hp) for n in classes],
                              shared_items(info, backbone, hp))
    return {**summary, "forgets": info.forgets, "keeps": info.keeps}


def shared_items(info, backbone: nn.Module, hp: dict) -> list[StorageItem]:
    """What a registered strategy keeps once for all tasks (none for most)."""
    return [] if info.shared_storage is None else info.shared_storage(backbone, hp)
