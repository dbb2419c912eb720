"""Suite files: reading a suite YAML and checking its keys and their types before torch and
Avalanche load, so a mistyped suite is reported at once (:mod:`benchmarks.suites` expands a suite
into run configs). A suite's keys are the sweep's (:data:`SWEEP_KEYS`) and the run settings
(``benchmarks.config``: their defaults and checks come from there)."""

from __future__ import annotations

from pathlib import Path

import yaml

from benchmarks.config import setting_defaults, settings
from vocab import HPARAMS_FROM

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class SuiteError(ValueError):
    """A suite name or a suite file entry is invalid."""


def suite_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _names(v) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and bool(v)
                                  and all(isinstance(x, str) for x in v))


EXCLUDE_KEYS = ("stream", "backbone")


def _exclusions(v) -> bool:
    return isinstance(v, list) and all(
        isinstance(x, dict) and x and set(x) <= set(EXCLUDE_KEYS)
        and all(isinstance(y, str) for y in x.values()) for x in v)


# The sweep's keys (what varies across the runs of a suite, and where hyperparameters come from):
# key -> (default, test of a YAML value, what the test wants). The run settings' come from
# benchmarks.config.
SWEEP_KEYS = {
    "stream": ("mnist5k-domains", _names, "a name or a list of names"),
    "backbone": ("vit_micro", _names, "a name or a list of names"),
    "strategies": ("all", _names, "all or a list of strategy names"),
    "seeds": ([0], lambda v: isinstance(v, list) and bool(v) and all(_int(x) for x in v)
              and len(set(v)) == len(v), "a list of distinct integers, like [0, 1, 2]"),
    "hparams": ({}, lambda v: isinstance(v, dict) and all(isinstance(x, dict)
                                                          for x in v.values()),
                "a mapping {strategy: {hyperparameter: value}}"),
    "hparams_from": ("registered", lambda v: v in HPARAMS_FROM,
                     f"one of {', '.join(HPARAMS_FROM)}"),
    "exclude": ([], _exclusions, "a list of {stream: NAME, backbone: NAME} pairs (either key "
                "may be left out: it then matches every name)"),
}
DEFAULTS = {**{k: default for k, (default, _, _) in SWEEP_KEYS.items()}, **setting_defaults()}
KEY_TYPES = {"description": (lambda v: isinstance(v, str), "a string"),
             **{k: (test, wanted) for k, (_, test, wanted) in SWEEP_KEYS.items()},
             **{k: (s.check.test, s.check.wanted) for k, s in settings().items()}}


def check_values(suite: dict, where: str = "") -> None:
    """Raise :class:`SuiteError` naming the first key whose value fails its check."""
    for key, value in suite.items():
        if key in KEY_TYPES and not KEY_TYPES[key][0](value):
            raise SuiteError(f"{where}{key} must be {KEY_TYPES[key][1]}, got {value!r}")


def load_suite(name: str) -> dict:
    """A suite by name (``configs/<name>.yaml``) or by the path of a YAML file, its keys and
    their types checked (:data:`KEY_TYPES`)."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SuiteError(f"unknown suite {name!r}; valid: {', '.join(suite_names())} or the "
                         "path of a suite YAML file")
    try:
        suite = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        raise SuiteError(f"{path} is not valid YAML{line}: "
                         f"{getattr(e, 'problem', None) or e}") from e
    if not isinstance(suite, dict):
        raise SuiteError(f"{path} must be a mapping of suite keys; valid: {sorted(DEFAULTS)}")
    unknown = set(suite) - set(DEFAULTS) - {"description"}
    if unknown:
        raise SuiteError(f"{path}: unknown keys {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
    check_values(suite, f"{path}: ")
    if "epochs" in suite and suite.get("steps_per_task") is not None:  # one would be ignored
        raise SuiteError(f"{path}: sets both epochs and steps_per_task; a task has one budget: "
                         "keep one")
    return {**DEFAULTS, **suite, "suite": path.stem}
