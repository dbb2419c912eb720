"""Suites: named YAML files in ``configs/`` expanded into fully resolved run configs.

A suite file sets ``stream`` and ``backbone`` (each one name or a list), ``strategies`` (a list, or
``all`` = every registered strategy), ``seeds`` and the training settings;
``hparams: {strategy: {name: value}}`` overrides a strategy's paper defaults. Each expanded
config is complete — it alone determines the run and its folder name (a hash of it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from benchmarks.config import RunConfig, settings
from benchmarks.data.preprocess import PreprocessError, resolve_preprocess
from benchmarks.suitefile import CONFIG_DIR, SuiteError, check_values
from models.attention import dropkey_rates
from models.factory import family, pretrained_normalization
from strategies import STRATEGIES
from strategies.registry import budget_hparams, refusal, resolve_hparams

TUNED_DIR = CONFIG_DIR.parent / "tuned"


def strategy_list(value) -> list[str]:
    names = list(STRATEGIES) if value in ("all", ["all"]) else list(value)
    bad = [n for n in names if n not in STRATEGIES]
    if bad:
        raise SuiteError(f"unknown strategy {bad[0]!r}; valid: {', '.join(STRATEGIES)}")
    return names


def resolve_head_init(strategy: str, choice: str) -> str:
    """``auto`` -> the strategy's registered default (probe unless it trains the backbone)."""
    return STRATEGIES[strategy].head_init if choice == "auto" else choice


def stream_list(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def expand(suite: dict, say: Callable[[str], None] | None = None) -> list[RunConfig]:
    """One resolved config per (stream, backbone, strategy, seed), in suite order, but for the
    (stream, backbone) pairs the suite's ``exclude`` names. A strategy that refuses a backbone's
    family (``strategies.registry.refusal``) gets no runs on it; ``say`` gets a line for each
    such pair."""
    return [cfg for stream in stream_list(suite["stream"])
            for backbone in stream_list(suite["backbone"])
            if not excluded(suite, stream, backbone)
            for cfg in _expand_stream({**suite, "stream": stream, "backbone": backbone}, say)]


def excluded(suite: dict, stream: str, backbone: str) -> bool:
    """Whether an entry of the suite's ``exclude`` matches (stream, backbone); a key an entry
    leaves out matches every name."""
    pair = {"stream": stream, "backbone": backbone}
    return any(all(pair[k] == v for k, v in entry.items()) for entry in suite.get("exclude", []))


def check_dropkey(suite: dict) -> None:
    p, schedule = suite["dropkey"], suite["dropkey_schedule"]
    try:
        dropkey_rates(float(p), 1, schedule)
    except (TypeError, ValueError) as e:
        raise SuiteError(f"dropkey: {e}") from e


def tuned_path(suite_name: str) -> Path:
    return TUNED_DIR / f"{suite_name}.yaml"


def tuned_hparams(suite_name: str) -> dict[str, dict]:
    """{strategy: chosen values} from ``tuned/<suite>.yaml`` (``run_benchmark.py tune``)."""
    path = tuned_path(suite_name)
    if not path.is_file():
        raise SuiteError(f"--hparams tuned: {path} does not exist; run `python run_benchmark.py "
                         f"tune --suite {suite_name}` first")
    tuned = yaml.safe_load(path.read_text()) or {}
    return {name: entry["chosen"] for name, entry in tuned.get("strategies", {}).items()
            if entry.get("chosen") is not None}


def hparams_source(strategy: str, tuned: dict, user: dict) -> str:
    """Where a run's hyperparameters come from: the registered values' label (paper,
    paper+code, ...: ``strategies.registry.DEFAULT_SOURCES``), tuned, user or tuned+user."""
    return {(False, False): STRATEGIES[strategy].defaults, (True, False): "tuned",
            (False, True): "user", (True, True): "tuned+user"}[(bool(tuned), bool(user))]


def resolved_preprocess(suite: dict) -> dict:
    """The suite's preprocessing with ``auto`` normalization resolved for its backbone: the
    timm ``pretrained_cfg`` mean/std when the run starts from a checkpoint file."""
    norm = pretrained_normalization(suite["backbone"]) if suite["pretrained"] else None
    try:
        return resolve_preprocess(suite["preprocess"], norm)
    except PreprocessError as e:
        raise SuiteError(str(e)) from e


def _expand_stream(suite: dict, say: Callable[[str], None] | None) -> list[RunConfig]:
    check_values(suite)
    check_dropkey(suite)
    run_settings = {name: s.check.cast(suite[name]) for name, s in settings().items()}
    run_settings["preprocess"] = resolved_preprocess(suite)
    tuned_all = tuned_hparams(suite["suite"]) if suite["hparams_from"] == "tuned" else None
    configs = []
    for strategy in strategy_list(suite["strategies"]):
        why = refusal(strategy, family(suite["backbone"]))
        if why is not None:
            if say is not None:
                say(f"{strategy} on {suite['backbone']}: not run ({why})")
            continue
        user = (suite.get("hparams") or {}).get(strategy, {})
        tuned = {}
        if tuned_all is not None:
            if strategy not in tuned_all:
                raise SuiteError(f"{tuned_path(suite['suite'])} has no values for {strategy!r}; "
                                 f"run `python run_benchmark.py tune --suite {suite['suite']} "
                                 f"--strategies {strategy}`")
            tuned = tuned_all[strategy]
        try:
            hp = resolve_hparams(strategy, {**tuned, **user})
        except KeyError as e:
            raise SuiteError(e.args[0]) from e
        hp, factor = budget_hparams(strategy, hp, {*tuned, *user}, epochs=suite["epochs"],
                                    steps_per_task=suite["steps_per_task"],
                                    batch_size=suite["batch_size"])
        source = hparams_source(strategy, tuned, user) + ("+budget" if factor != 1.0 else "")
        for seed in suite["seeds"]:
            configs.append(RunConfig(
                suite=suite["suite"], stream=suite["stream"], backbone=suite["backbone"],
                strategy=strategy, seed=int(seed), hparams=hp, hparams_source=source,
                **{**run_settings,
                   "head_init": resolve_head_init(strategy, suite["head_init"])}))
    return configs
