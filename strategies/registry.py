"""The strategy registry: ``@register_strategy(name, ...)`` on a builder function.

A builder turns a pre-trained backbone, its hyperparameters and the run's training settings into
an Avalanche strategy (a ``SupervisedTemplate`` whose model is a multi-head ``MultiTaskModule``).
Next to the builder, registration declares what the strategy keeps per task (for the storage
bill), whether it can forget, and its paper defaults — the facts the README table and the
``storage`` command print.

Hyperparameter names. The rate of what a strategy trains (the first optimizer group of
``strategies.skeleton.Skeleton``) is ``lr`` in every strategy's code and registration, and ``lr`` is
accepted on input (suite files' ``hparams:``, ``tuned/*.yaml``, :func:`resolve_hparams`,
``make_strategy(hparams=...)``). Piggyback's and SupSup's runs were first recorded under another
name for it (:data:`RECORDED_NAMES`, the alias table), and a run's id hashes its resolved
hyperparameters (``benchmarks.config.RunConfig.run_id``): so that committed run ids, records and
tuned files stay valid, their hyperparameters are *recorded* under that name, which input accepts
as well. The registry therefore speaks recorded names (a :class:`StrategyInfo`'s ``hparams``,
``search_space`` and ``paper_budget``; what :func:`resolve_hparams` and :func:`budget_hparams`
return) and a builder reads code names: :meth:`StrategyInfo.build` hands it ``hp`` through
:meth:`StrategyInfo.in_code`, the one translation (storage functions read no rates). Rates of
extra groups and heads keep their own names: HAT's ``gate_lr``; MEAT's ``token_mask_lr`` and
``ffn_mask_lr`` (MEAT trains only masks, two kinds at two rates, so it has no ``lr``: the names
are the paper's, and the runner's warnings name a mask kind's rate ``<kind>_mask_lr``);
``head_lr``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

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

# {strategy: {code name: recorded name}}: the alias table of the module docstring. Piggyback's and
# SupSup's rates of their scores were first recorded as ``mask_lr`` and ``score_lr``.
RECORDED_NAMES: dict[str, dict[str, str]] = {
    "piggyback": {"lr": "mask_lr"},
    "supsup": {"lr": "score_lr"},
}


def _renamed(d: dict, names: dict[str, str]) -> dict:
    """``d`` with the keys that ``names`` maps renamed, in order."""
    return {names.get(k, k): v for k, v in d.items()}


@dataclass(kw_only=True)
class StrategyInfo:
    """A registration (:func:`register_strategy`), its hyperparameters under their recorded names
    (module docstring)."""

    name: str
    builder: Builder  # as registered: reads its hyperparameters under their code names
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
    recorded_names: dict[str, str]  # {code name: recorded name}: RECORDED_NAMES[name]

    def recorded_name(self, key: str) -> str:
        """The name hyperparameter ``key`` (in either spelling) is recorded under."""
        return self.recorded_names.get(key, key)

    def in_code(self, hp: dict) -> dict:
        """``hp`` (in either spelling) under the names the strategy's code reads."""
        return _renamed(hp, {recorded: key for key, recorded in self.recorded_names.items()})

    def build(self, backbone: nn.Module, hp: dict, settings: TrainSettings):
        """The strategy on ``backbone`` (an Avalanche template)."""
        return self.builder(backbone, self.in_code(hp), settings)


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
    Names are the code's (``lr`` for the rate of what the strategy trains); the registry keeps
    them under their recorded names (module docstring).
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
        names = RECORDED_NAMES.get(name, {})
        STRATEGIES[name] = StrategyInfo(
            name=name, builder=build, hparams=_renamed(hparams, names), storage=storage,
            trains=trains, keeps=keeps, forgets=forgets, paper=paper, head_init=head_init,
            search_space=_renamed(space, names), defaults=defaults,
            shared_storage=shared_storage, mask_kinds=tuple(mask_kinds),
            refuses=dict(refuses or {}), task_inference=task_inference,
            paper_budget=None if paper_budget is None else replace(
                paper_budget, rates=tuple(names.get(k, k) for k in paper_budget.rates)),
            recorded_names=dict(names))
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
    """The strategy's registered values updated with ``overrides``, under the recorded names
    (module docstring). An override may use either name of a renamed hyperparameter; of two
    overrides of one hyperparameter the later wins, as in ``{**tuned, **user}``. Unknown keys are
    an error."""
    info = get_strategy(name)
    hp = dict(info.hparams)
    for given, v in (overrides or {}).items():
        k = info.recorded_name(given)
        if k not in hp:
            raise KeyError(f"strategy {name!r} has no hyperparameter {given!r}; valid: "
                           f"{', '.join(hp)}")
        try:
            hp[k] = _coerce(hp[k], v)
        except ValueError as e:
            raise KeyError(f"strategy {name!r}: hyperparameter {k!r} must be {e} (registered: "
                           f"{hp[k]!r}), got {v!r}") from None
    return hp


def budget_hparams(name: str, hp: dict, given: set[str], *, epochs: int,
                   steps_per_task: int | None, batch_size: int) -> tuple[dict, float]:
    """``hp`` (recorded names) with the strategy's registered rates (those not in ``given``, in
    either spelling: tuned or user values are kept as they are) scaled to its paper's
    learning-rate mass at this budget (``strategies.schedules.budget_factor``), and the factor
    (1.0: nothing scaled)."""
    info = get_strategy(name)
    budget, given = info.paper_budget, {info.recorded_name(k) for k in given}
    scaled = [] if budget is None else [k for k in budget.rates if k not in given]
    if not scaled:
        return hp, 1.0
    factor = budget_factor(budget, epochs=epochs, steps_per_task=steps_per_task,
                           batch_size=batch_size, lr_scaling=hp.get("lr_scaling", "none"))
    if factor == 1.0:
        return hp, 1.0
    return {**hp, **{k: hp[k] * factor for k in scaled}}, factor
