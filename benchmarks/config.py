"""A run's configuration: what one (stream, backbone, strategy, seed) run is, fully resolved —
and the one place where each of its settings is declared.

:class:`RunConfig` is built once per run by ``benchmarks.suites.expand`` (which validates every
value) and is immutable afterwards; the runner, the executors and the tuner read its fields.
``to_dict()`` is the ``config`` of the run's ``record.json`` and ``config.yaml``, and
:attr:`RunConfig.run_id` (a hash of that dict) names the run's folder.

**A setting is one field.** Every field made with :func:`setting` carries its default, the check
of its value (:class:`Check`), its help line and how it enters the run id; from those come the
suite file's keys and checks (``benchmarks.suitefile``), the command-line flags
(``run_benchmark.py``: ``--<name-with-dashes>``), the suite-to-config step (``expand``), the
strategies' ``TrainSettings`` (the fields of the same name) and the run id. A new optional
setting is one field with ``neutral=`` its default: runs that leave it there keep their ids.

Id rules (``neutral``): a field at its neutral value is left out of the hash, so run folders and
committed records keep their ids when a setting is added. A setting added while runs were being
recorded at its default (``omit_at_neutral=True``, the default for new settings) is also left
out of the recorded config at that value; four older ones (``precision``, ``tf32``,
``preprocess``, ``steps_per_task``) are recorded always.
This module imports neither torch nor the strategies: the CLI checks flags and suite files with it
before torch loads.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.data.preprocess import NONE as NO_PREPROCESSING
from results.records import run_id
from vocab import DEVICES, DROPKEY_SCHEDULES, HEAD_INIT_CHOICES, PRECISIONS, PREPROCESS_PRESETS

ROOT = Path(__file__).resolve().parent.parent
# base checkpoints, probes, features and decoded images (env VITCL_CACHE)
DEFAULT_CACHE = Path(os.environ.get("VITCL_CACHE", ROOT / ".cache" / "pretrained"))

ALWAYS = object()  # ``neutral`` of a field that is always part of the run id


@dataclass(frozen=True)
class Check:
    """What a setting's value must be: ``test(value)`` for a suite file's YAML value, ``wanted``
    in words for the error, ``parse(text)`` for a command-line value (``ValueError`` if bad;
    None: a true/false flag), ``choices`` to list in ``--help``, ``cast`` to the config's type
    (a YAML ``0`` for a float setting is ``0.0``: one run, one id)."""

    test: Callable[[object], bool]
    wanted: str
    parse: Callable[[str], object] | None
    choices: tuple | None = None
    cast: Callable[[object], object] = lambda v: v  # a checked value as the config holds it


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _parsed(check: Callable[[object], bool], convert: Callable[[str], object]):
    def parse(text: str):
        value = convert(text)
        if not check(value):
            raise ValueError(text)
        return value
    return parse


def integer(low: int, null: str | None = None) -> Check:
    """An integer >= ``low``; with ``null`` (what null means), also null."""
    test = (lambda v: (null is not None and v is None) or (_is_int(v) and v >= low))
    wanted = f"an integer >= {low}" + (" or null" + (f" ({null})" if null else "")
                                       if null is not None else "")
    return Check(test, wanted, _parsed(test, int))


def number(low: float, below: float | None = None) -> Check:
    """A number in [low, below) (no upper bound without ``below``)."""
    test = (lambda v: _is_number(v) and v >= low and (below is None or v < below))
    wanted = f"a number in [{low:g}, {below:g})" if below is not None else f"a number >= {low:g}"
    return Check(test, wanted, _parsed(test, float), cast=float)


def one_of(choices: tuple[str, ...]) -> Check:
    return Check(lambda v: v in choices, f"one of {', '.join(choices)}", str, choices)


def path(what: str) -> Check:
    return Check(lambda v: v is None or isinstance(v, str), f"{what} or null", str)


TRUE_OR_FALSE = Check(lambda v: isinstance(v, bool), "true or false", None)
PREPROCESS = Check(lambda v: isinstance(v, (str, dict)), "a preset name or a mapping", str,
                   PREPROCESS_PRESETS)


@dataclass(frozen=True)
class Setting:
    help: str
    check: Check
    neutral: object = ALWAYS
    omit_at_neutral: bool = True
    flag_default: object = None  # the flag's value when not given (None: the suite's)
    in_run_id: bool = True  # False: how a run gets its inputs, never what it computes
    exclusive: str | None = None  # flags of one group exclude each other


def setting(default, check: Check, help: str, **how) -> dataclasses.Field:
    """A :class:`RunConfig` field that is a setting (see the module docstring)."""
    metadata = {"setting": Setting(help, check, **how)}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class RunConfig:
    suite: str  # the suite it came from (a name, or a YAML file's stem)
    stream: str  # benchmarks.data.streams name
    backbone: str  # models.factory name or timm name
    strategy: str  # registered strategy name
    seed: int
    hparams: dict  # the strategy's resolved hyperparameters
    hparams_source: str  # registered label, tuned, user or tuned+user
    epochs: int = setting(
        10, integer(1), "epochs per task; replaces the suite's budget, steps too",
        exclusive="budget")
    steps_per_task: int | None = setting(
        None, integer(1, null=""), "a task's budget in optimizer steps instead of epochs; "
        "replaces the suite's budget", neutral=None, omit_at_neutral=False, exclusive="budget")
    batch_size: int = setting(64, integer(1), "training mini-batch size")
    eval_batch_size: int = setting(512, integer(1), "evaluation batch size")
    base_epochs: int = setting(10, integer(1), "epochs of base pre-training")
    head_init: str = setting(
        "auto", one_of(HEAD_INIT_CHOICES), "new heads start from the converged linear probe or "
        "at random; auto (default) = each strategy's registered choice (the probe for all of "
        "the suite's); a run records the resolved one")
    dropkey: float = setting(
        0.0, number(0, 1), "DropKey ratio p in [0, 1) for every attention layer while "
        "strategies train (0 = off)")
    dropkey_schedule: str = setting(
        "linear", one_of(DROPKEY_SCHEDULES), "per-layer DropKey ratio: linear from p at the "
        "first layer to 0 at the last (default), or constant p")
    val_fraction: float = setting(
        0.1, number(0, 1), "share of each task's training data held out for validation")
    device: str = setting(
        "cpu", one_of(DEVICES), "auto = cuda when available; a run records the resolved one",
        flag_default="auto")
    data_root: str | None = setting(
        None, path("a folder path"), "folder of a local dataset (cifar10, svhn, imagefolder...)")
    pretrained: str | None = setting(
        None, path("a file path, hub,"), "local checkpoint file to start from instead of base "
        "pre-training, or hub: the backbone's timm pretrained tag from the local Hugging Face "
        "cache (--download or HF_HUB_OFFLINE=0 fetches it there first)")
    download: bool = setting(
        False, TRUE_OR_FALSE, "fetch what the run lacks over the network: the local datasets "
        "torchvision can download (into --data-root) and --pretrained hub weights not yet in "
        "the Hugging Face cache (default off: local folders and files only)",
        neutral=False, in_run_id=False)
    preprocess: dict = setting(
        NO_PREPROCESSING, PREPROCESS, "input preset (benchmarks/data/preprocess.py): none = "
        "resized images in [0, 1] (default); deit = DeiT crops, flips and the backbone's "
        "normalization; a suite file may override its fields", neutral=NO_PREPROCESSING,
        omit_at_neutral=False)
    precision: str = setting(
        "fp32", one_of(PRECISIONS), "fp32 (default; TF32 matmuls on CUDA) or bf16 autocast "
        "(CUDA and CPU; masks, gates and optimizer state stay fp32)", neutral="fp32",
        omit_at_neutral=False)
    tf32: bool = setting(True, TRUE_OR_FALSE, "TF32 matmuls in fp32 CUDA runs (default on)",
                         neutral=True, omit_at_neutral=False)
    img_size: int | None = setting(
        None, integer(1, null=""), "resize a local dataset's images to N x N pixels on load "
        "(decoded once into the image cache); default: their own size (the paper stream: 224)",
        neutral=None)
    task_agnostic: bool = setting(
        False, TRUE_OR_FALSE, "also evaluate without task ids: class-incremental accuracy and "
        "task-inference accuracy beside the task-incremental ones", neutral=False)
    deterministic: bool = setting(
        False, TRUE_OR_FALSE, "torch.use_deterministic_algorithms(True) and "
        "CUBLAS_WORKSPACE_CONFIG=:4096:8 in every run, for CUDA runs that must repeat bit for "
        "bit (slower; a run stops at an operation without a deterministic CUDA kernel; CPU runs "
        "repeat without it; docs/sweeps.md)", neutral=False)
    loader_workers: int | None = setting(
        None, integer(0, null="the device decides"), "DataLoader worker processes per run "
        "(default: none on the CPU, one per CPU of the run, at most 8, on CUDA); 0 reads batches "
        "in the run's own process, without shared memory (docs/running.md)", neutral=None)
    # a tuning trial ({tasks, trial, searched}); set by benchmarks.tuning, not by users
    tuning: dict | None = field(default=None, metadata={"setting": None, "neutral": None})

    def to_dict(self) -> dict:
        """The run's ``config`` as recorded: every field, but those left out at their neutral
        value (``omit_at_neutral``)."""
        out = dataclasses.asdict(self)
        for name, neutral in omitted_at_neutral(type(self)).items():
            if out[name] == neutral and type(out[name]) is type(neutral):  # 0 workers is set
                del out[name]
        return out

    @property
    def run_id(self) -> str:
        """``results.records.run_id`` of the recorded config, fields at their neutral value
        and fields outside the id (``in_run_id=False``) left out."""
        neutral = neutral_values(type(self))
        outside = {name for name, s in settings(type(self)).items() if not s.in_run_id}
        return run_id({k: v for k, v in self.to_dict().items()
                       if k not in outside and (k not in neutral or v != neutral[k])})

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


def settings(config_class: type = RunConfig) -> dict[str, Setting]:
    """{field name: its :class:`Setting`} for the fields that are settings, in field order."""
    return {f.name: f.metadata["setting"] for f in dataclasses.fields(config_class)
            if f.metadata.get("setting") is not None}


def setting_defaults(config_class: type = RunConfig) -> dict:
    return {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
            for f in dataclasses.fields(config_class) if f.name in settings(config_class)}


def neutral_values(config_class: type) -> dict:
    """{field: the value at which it is left out of the run id}."""
    out = {name: s.neutral for name, s in settings(config_class).items() if s.neutral is not ALWAYS}
    out.update({f.name: f.metadata["neutral"] for f in dataclasses.fields(config_class)
                if "neutral" in f.metadata})
    return out


def omitted_at_neutral(config_class: type) -> dict:
    """{field: the value at which it is left out of the recorded config}."""
    return {name: value for name, value in neutral_values(config_class).items()
            if name not in settings(config_class) or settings(config_class)[name].omit_at_neutral}


def shared_settings(config: RunConfig, target: type) -> dict:
    """The config's settings that dataclass ``target`` has a field of the same name for (the
    strategies' ``TrainSettings``): one declaration here, passed on by name."""
    names = {f.name for f in dataclasses.fields(target)}
    return {name: getattr(config, name) for name in settings(type(config)) if name in names}
