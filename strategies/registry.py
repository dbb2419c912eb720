"""The strategy registry: ``@register_strategy(name, ...)`` on a builder function.

A builder turns a pre-trained backbone, its hyperparameters and the run's training settings into
an Avalanche strategy (a ``SupervisedTemplate`` whose model is a multi-head ``MultiTaskModule``).
Next to the builder, registration declares what the strategy keeps per task (for the storage
bill), whether it can forget, and its paper defaults — the facts the README table and the
``storage`` command print.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor, nn

from models.task_inference import RULES
from strategies.features import PassMeter
from strategies.schedules import PaperBudget, budget_factor
from strategies.storage import StorageItem
from vocab import HEAD_INITS


@dataclass
class TrainSettings:
    """What the runner decides for every strategy alike."""

    epochs: int = 1
    steps_per_task: int | None = None  # a budget in optimizer steps instead of epochs
    batch_size: int = 64
    eval_batch_size: int = 512
    device: str = "cpu"
    head_init: str = "probe"  # one of HEAD_INITS
    plugins: list = field(default_factory=list)  # runner plugins (counting, progress, probe)
    precision: str = "fp32"  # "fp32" | "bf16" (autocast; parameters and optimizer stay fp32)
    # batch (on the device), training? -> model input: conversion, augmentation, normalization
    inputs: Callable[[Tensor, bool], Tensor] | None = None
    loader_workers: int = 0  # DataLoader worker processes for training and evaluation
    fixed_passes: PassMeter | None = None  # counts the passes outside training
    evaluator: object = None  # an Avalanche EvaluationPlugin (None: no metrics, no loggers)


Builder = Callable[[nn.Module, dict, TrainSettings], object]
StorageFn = Callable[[nn.Module, int, dict], list[StorageItem]]
SharedStorageFn = Callable[[nn.Module, dict], list[StorageItem]]


# Labels of registered hyperparameter values: "paper" only where every value is the paper's
# (through its own rate rule and schedule); "paper+code" adds values from the official code;
# "paper+suite" adds the suite's own where the paper gives none; "suite": the suite's own.
DEFAULT_SOURCES = ("paper", "paper+code", "paper+suite", "suite")


@dataclass
class StrategyInfo:
    name: str
    build: Builder
    hparams: dict
    storage: StorageFn  # (backbone, n_classes of the task, hparams) -> what task t keeps
    trains: str
    keeps: str
    forgets: bool
    paper: str
    head_init: str  # what --head-init auto resolves to for this strategy
    search_space: dict  # {hparam: candidate values} for `run_benchmark.py tune`
    defaults: str  # where the registered values come from: a label of DEFAULT_SOURCES
    shared_storage: SharedStorageFn | None  # what it keeps once for all tasks (None: nothing)
    mask_kinds: tuple[str, ...]  # the kinds of binary masks it learns per task (models.masks)
    refuses: dict[str, str]  # {backbone family: why the strategy cannot run on it}
    task_inference: str  # how it infers the task without a task id (models.task_inference)
    paper_budget: PaperBudget | None  # the budget its registered rates belong to (None: any)


STRATEGIES: dict[str, StrategyInfo] = {}


def register_strategy(
    name: str,
    *,
    hparams: dict,
    storage: StorageFn,
    trains: str,
    keeps: str,
    forgets: bool,
    paper: str,
    defaults: str,
    head_init: str = "probe",
    search_space: dict | None = None,
    shared_storage: SharedStorageFn | None = None,
    mask_kinds: tuple[str, ...] = (),
    refuses: dict[str, str] | None = None,
    task_inference: str = "entropy",
    paper_budget: PaperBudget | None = None,
) -> Callable[[Builder], Builder]:
    """Register ``build(backbone, hparams, settings) -> SupervisedTemplate`` under ``name``.

    ``defaults`` says where the registered ``hparams`` come from (:data:`DEFAULT_SOURCES`); it is
    the ``hparams_source`` of runs that use them. ``head_init`` is the strategy's default for new
    heads ("probe": start from the converged linear probe; "random"), used when the run asks for
    ``head_init: auto``. ``search_space`` maps hyperparameters to the values ``tune`` may try
    (``benchmarks.tuning``); the registered defaults are always tried first.
    ``shared_storage(backbone, hparams)``: what the strategy adds once for all tasks (e.g.
    adapters shared by every task), counted beside the base model in the storage bill.
    ``mask_kinds``: the kinds of per-task binary masks the strategy learns (``TaskMask.kind``:
    "token", "ffn", "weight", "gate"); runs record how far each kind moved, and the
    performance benchmark measures the strategies that have any.
    ``refuses``: backbone families (``models.factory.family``) the strategy's mechanism does not
    apply to, each with the reason; suites skip those pairs and say why.
    ``task_inference``: the rule that picks the task when the task id is not given
    (``models.task_inference.RULES``: ``entropy`` for per-task state, ``max_logit`` = a single
    growing head for strategies whose features do not depend on the task).
    ``paper_budget``: the paper's budget per task that the registered rates belong to
    (``strategies.schedules.PaperBudget``); runs at another budget scale them to the paper's
    learning-rate mass (:func:`budget_hparams`).
    """
    space = {k: list(v) for k, v in (search_space or {}).items()}
    unknown = set(space) - set(hparams)
    if unknown:
        raise ValueError(f"search space of {name!r} names unknown hyperparameters {unknown}")
    if defaults not in DEFAULT_SOURCES:
        raise ValueError(f"defaults of {name!r} must be one of {DEFAULT_SOURCES}")
    if task_inference not in RULES:
        raise ValueError(f"task_inference of {name!r} must be one of {RULES}")
    if head_init not in HEAD_INITS:
        raise ValueError(f"head_init of {name!r} must be one of {HEAD_INITS}")
    if paper_budget is not None and not set(paper_budget.rates) <= set(hparams):
        raise ValueError(f"paper_budget of {name!r} names rates that are not hyperparameters")

    def deco(build: Builder) -> Builder:
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} registered twice")
        STRATEGIES[name] = StrategyInfo(
            name, build, dict(hparams), storage, trains, keeps, forgets, paper, head_init, space,
            defaults, shared_storage, tuple(mask_kinds), dict(refuses or {}), task_inference,
            paper_budget)
        return build

    return deco


def strategy_table() -> str:
    """The README's strategy table (markdown), from the registrations."""
    lines = ["| strategy | trains | keeps per task | can forget | head starts from (`auto`) | "
             "source |", "|---|---|---|---|---|---|"]
    lines += [f"| `{s.name}` | {s.trains} | {s.keeps} | {'yes' if s.forgets else 'no'} | "
              f"{s.head_init} | {s.paper} |" for s in STRATEGIES.values()]
    return "\n".join(lines)


def refusal(name: str, backbone_family: str) -> str | None:
    """Why strategy ``name`` cannot run on a backbone of ``backbone_family`` (None: it can)."""
    return get_strategy(name).refuses.get(backbone_family)


def get_strategy(name: str) -> StrategyInfo:
    if name not in STRATEGIES:
        raise KeyError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def _coerce(default, value):
    """A user value (often a string from the CLI or YAML) as the default's type; ValueError
    naming the type when it is not one."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise ValueError("true or false")
    if isinstance(default, int):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
        if isinstance(value, bool) or number is None or not number.is_integer():
            raise ValueError("an integer")
        return int(number)
    if isinstance(default, float):
        if isinstance(value, bool):
            raise ValueError("a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError("a number") from None
    return value  # strings and structures as given (MEAT's layers: "all" or [2, 5, 8])


def resolve_hparams(name: str, overrides: dict | None = None) -> dict:
    """The strategy's paper defaults updated with ``overrides``; unknown keys are an error."""
    hp = dict(get_strategy(name).hparams)
    for k, v in (overrides or {}).items():
        if k not in hp:
            raise KeyError(f"strategy {name!r} has no hyperparameter {k!r}; valid: {', '.join(hp)}")
        try:
            hp[k] = _coerce(hp[k], v)
        except ValueError as e:
            raise KeyError(f"strategy {name!r}: hyperparameter {k!r} must be {e} (registered: "
                           f"{hp[k]!r}), got {v!r}") from None
    return hp


def budget_hparams(name: str, hp: dict, given: set[str], *, epochs: int,
                   steps_per_task: int | None, batch_size: int) -> tuple[dict, float]:
    """``hp`` with the strategy's registered rates (those not in ``given``: tuned or user values
    are kept as they are) scaled to its paper's learning-rate mass at this budget
    (``strategies.schedules.budget_factor``), and the factor (1.0: nothing scaled)."""
    budget = get_strategy(name).paper_budget
    scaled = [] if budget is None else [k for k in budget.rates if k not in given]
    if not scaled:
        return hp, 1.0
    factor = budget_factor(budget, epochs=epochs, steps_per_task=steps_per_task,
                           batch_size=batch_size, lr_scaling=hp.get("lr_scaling", "none"))
    if factor == 1.0:
        return hp, 1.0
    return {**hp, **{k: hp[k] * factor for k in scaled}}, factor
