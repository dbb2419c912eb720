"""A run's configuration: what one (stream, backbone, strategy, seed) run is, fully resolved.

:class:`RunConfig` is built once per run by ``benchmarks.suites.expand`` (which validates every
value) and is immutable afterwards; the runner, the executors and the tuner read its fields.
``to_dict()`` is the ``config`` of the run's ``record.json`` and ``config.yaml``, and
``run_id`` (``results.records.run_id`` of that dict) names the run's folder — the same hash as
before the config was typed, so existing run folders and the committed records keep their ids.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from results.records import run_id

# base checkpoints, probes, features and decoded images (env VITCL_CACHE)
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path(os.environ.get("VITCL_CACHE", ROOT / ".cache" / "pretrained"))

# settings added after runs were recorded: left out of a config at their default
OPTIONAL = ("tuning", "img_size", "task_agnostic", "deterministic", "loader_workers")


@dataclass(frozen=True)
class RunConfig:
    suite: str  # the suite it came from (a name, or a YAML file's stem)
    stream: str  # benchmarks.data.streams name
    backbone: str  # models.factory name or timm name
    strategy: str  # registered strategy name
    seed: int
    epochs: int  # passes per task (unless steps_per_task is set)
    steps_per_task: int | None  # optimizer steps per task, or None: the budget is epochs
    batch_size: int
    eval_batch_size: int
    base_epochs: int  # base pre-training epochs of the stream's base task, when it has one
    head_init: str  # "probe" | "random" (auto already resolved)
    dropkey: float  # DropKey ratio of the first attention layer (0: off)
    dropkey_schedule: str
    val_fraction: float  # share of each task's training data held out for validation
    device: str
    data_root: str | None  # folder of local datasets
    pretrained: str | None  # local checkpoint file
    hparams: dict  # the strategy's resolved hyperparameters
    hparams_source: str  # registered label, tuned, user or tuned+user
    preprocess: dict  # benchmarks.data.inputs preset, resolved
    precision: str  # "fp32" | "bf16"
    tf32: bool
    tuning: dict | None = field(default=None)  # a tuning trial: {tasks, trial, searched}
    img_size: int | None = field(default=None)  # local images resized to this on load
    # also evaluate without task ids (models.task_inference): class-incremental accuracy
    task_agnostic: bool = field(default=False)
    # torch.use_deterministic_algorithms(True) (benchmarks.runner.set_determinism)
    deterministic: bool = field(default=False)
    # DataLoader worker processes; None: benchmarks.runner.loader_workers decides by the device
    loader_workers: int | None = field(default=None)

    def to_dict(self) -> dict:
        """The run's ``config`` as recorded; the keys of :data:`OPTIONAL` only when set (not at
        their default, None or False), so runs without them keep their ids."""
        out = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if f.name in OPTIONAL and out[f.name] is f.default:  # (0 workers is set)
                del out[f.name]
        return out

    @property
    def run_id(self) -> str:
        return run_id(self.to_dict())

    @classmethod
    def from_dict(cls, config: dict) -> RunConfig:
        """The typed form of a recorded ``config`` (e.g. a record's, to re-run it)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(config) - names
        if unknown:
            raise ValueError(f"unknown run config keys {sorted(unknown)}")
        return cls(**config)

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)
