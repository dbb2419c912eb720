"""Suite files: reading a suite YAML and checking its keys and their types, with the standard
library and PyYAML only, so a mistyped suite is reported before torch and Avalanche load
(:mod:`benchmarks.suites` expands a suite into run configs)."""

from __future__ import annotations

from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

DEFAULTS = {
    "stream": "mnist5k-domains",
    "backbone": "vit_micro",
    "strategies": "all",
    "seeds": [0],
    "epochs": 10,
    "steps_per_task": None,
    "batch_size": 64,
    "eval_batch_size": 512,
    "base_epochs": 10,
    "head_init": "auto",
    "dropkey": 0.0,
    "dropkey_schedule": "linear",
    "val_fraction": 0.1,
    "device": "cpu",
    "data_root": None,
    "img_size": None,
    "pretrained": None,
    "hparams": {},
    "hparams_from": "registered",
    "preprocess": "none",
    "precision": "fp32",
    "tf32": True,
    "task_agnostic": False,
    "deterministic": False,
    "loader_workers": None,
    "exclude": [],
}


class SuiteError(ValueError):
    """A suite name or a suite file entry is invalid."""


def suite_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _names(v) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and bool(v)
                                  and all(isinstance(x, str) for x in v))


def _str_or_null(v) -> bool:
    return v is None or isinstance(v, str)


EXCLUDE_KEYS = ("stream", "backbone")


def _exclusions(v) -> bool:
    return isinstance(v, list) and all(
        isinstance(x, dict) and x and set(x) <= set(EXCLUDE_KEYS)
        and all(isinstance(y, str) for y in x.values()) for x in v)


# key -> (test of a YAML value, what the test wants)
KEY_TYPES = {
    "description": (lambda v: isinstance(v, str), "a string"),
    "stream": (_names, "a name or a list of names"),
    "backbone": (_names, "a name or a list of names"),
    "strategies": (_names, "all or a list of strategy names"),
    "seeds": (lambda v: isinstance(v, list) and bool(v) and all(_int(x) for x in v)
              and len(set(v)) == len(v), "a list of distinct integers, like [0, 1, 2]"),
    "epochs": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "steps_per_task": (lambda v: v is None or (_int(v) and v >= 1), "an integer >= 1 or null"),
    "batch_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "eval_batch_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "base_epochs": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "head_init": (lambda v: isinstance(v, str), "a string"),
    "dropkey": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "dropkey_schedule": (lambda v: isinstance(v, str), "a string"),
    "val_fraction": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                     and 0 <= v < 1, "a number in [0, 1)"),
    "device": (lambda v: isinstance(v, str), "a string"),
    "data_root": (_str_or_null, "a folder path or null"),
    "img_size": (lambda v: v is None or (_int(v) and v >= 1), "an integer >= 1 or null"),
    "pretrained": (_str_or_null, "a file path or null"),
    "hparams": (lambda v: isinstance(v, dict) and all(isinstance(x, dict) for x in v.values()),
                "a mapping {strategy: {hyperparameter: value}}"),
    "hparams_from": (lambda v: isinstance(v, str), "a string"),
    "preprocess": (lambda v: isinstance(v, (str, dict)), "a preset name or a mapping"),
    "precision": (lambda v: isinstance(v, str), "a string"),
    "tf32": (lambda v: isinstance(v, bool), "true or false"),
    "task_agnostic": (lambda v: isinstance(v, bool), "true or false"),
    "deterministic": (lambda v: isinstance(v, bool), "true or false"),
    "loader_workers": (lambda v: v is None or (_int(v) and v >= 0),
                       "an integer >= 0 or null (the device decides)"),
    "exclude": (_exclusions, "a list of {stream: NAME, backbone: NAME} pairs (either key may be "
                "left out: it then matches every name)"),
}


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
    for key, value in suite.items():
        test, wanted = KEY_TYPES[key]
        if not test(value):
            raise SuiteError(f"{path}: {key} must be {wanted}, got {value!r}")
    if "epochs" in suite and suite.get("steps_per_task") is not None:  # one would be ignored
        raise SuiteError(f"{path}: sets both epochs and steps_per_task; a task has one budget: "
                         "keep one")
    return {**DEFAULTS, **suite, "suite": path.stem}
