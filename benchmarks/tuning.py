"""Per-strategy hyperparameters chosen on validation data, never on test (``run_benchmark.py
tune``).

Protocol. Every strategy gets the same trial budget: its registered values first, then distinct
draws (seeded) from the ``search_space`` it registers (a strategy with fewer combinations gets all
of them). A trial is a run of the suite's first stream and backbone at its first seed, on the
stream's first ``tasks`` tasks (default 2) with each task's validation split in place of its test
split (``Stream.validation_only``); its score is the final average validation accuracy over those
tasks, with task ids (task-incremental) for every strategy, whatever settings the suite reports.
So no trial reads test data and no later task leaks into the choice. A trial in which some
kind of mask never left its initial state on some task (``mask_movement``) did not test the
method — MEAT with inert FFN masks is MEAT without them — so it is chosen only if every trial of
the strategy was like that. The best eligible trial (ties: the earlier) and every trial's score
and movement are written to ``tuned/<suite>.yaml``; runs with
``--hparams tuned`` use the chosen values (``hparams_source: tuned`` in their config). Trials run
through the sweep executors like any run.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import yaml

from atomicio import atomic_write_text
from benchmarks.config import RunConfig
from benchmarks.executors import ExecutorOptions, run_all
from benchmarks.suites import expand, stream_list, tuned_path
from results.records import find_records
from strategies import get_strategy
from strategies.registry import resolve_hparams

DEFAULT_BUDGET = 8
DEFAULT_TASKS = 2


def trial_hparams(strategy: str, budget: int, seed: int = 0) -> list[dict]:
    """The searched values of ``strategy``'s trials: the registered values, then up to
    ``budget - 1`` distinct draws from its search space, in a seeded order."""
    info = get_strategy(strategy)
    keys = sorted(info.search_space)
    registered = {k: info.hparams[k] for k in keys}
    grid = [dict(zip(keys, values, strict=True))
            for values in itertools.product(*(info.search_space[k] for k in keys))]
    rest = [g for g in grid if g != registered]
    random.Random(f"{strategy}:{seed}").shuffle(rest)
    return [registered, *rest][:budget]


def trial_configs(suite: dict, budget: int, tasks: int) -> list[RunConfig]:
    """One run config per (strategy, trial) on the suite's first stream, backbone and seed."""
    first = {**suite, "stream": stream_list(suite["stream"])[0],
             "backbone": stream_list(suite["backbone"])[0], "seeds": suite["seeds"][:1],
             "hparams_from": "registered", "task_agnostic": False}  # scored with task ids
    configs = []
    for base in expand(first):
        user = (suite.get("hparams") or {}).get(base.strategy, {})
        for i, trial in enumerate(trial_hparams(base.strategy, budget, base.seed)):
            configs.append(base.replace(
                hparams=resolve_hparams(base.strategy, {**user, **trial}), hparams_source="trial",
                tuning={"tasks": tasks, "trial": i, "searched": trial}))
    return configs


def masks_moved(record: dict) -> bool:
    """Every kind of mask changed on every task of the run (true without masks)."""
    return all(m["changed"] > 0 for task in record.get("mask_movement", [])
               for m in task.values())


def trial_entry(config: RunConfig, record: dict | None) -> dict:
    """A trial as ``tuned/<suite>.yaml`` lists it: searched values, score, whether masks moved."""
    if record is None:
        return {"hparams": config.tuning["searched"], "val_acc": None, "masks_moved": None}
    return {"hparams": config.tuning["searched"], "val_acc": record["metrics"]["final_avg_acc"],
            "masks_moved": masks_moved(record)}


def choose(trials: list[dict]) -> dict | None:
    """The best finished trial (ties: the earlier) among those whose masks moved, or among all
    finished ones if none did; None if none finished."""
    done = [t for t in trials if t["val_acc"] is not None]
    eligible = [t for t in done if t["masks_moved"]] or done
    return max(eligible, key=lambda t: t["val_acc"]) if eligible else None


def tune(suite: dict, out: Path, cache: Path, options: ExecutorOptions | None = None,
         budget: int = DEFAULT_BUDGET, tasks: int = DEFAULT_TASKS,
         tuned_file: Path | None = None) -> dict:
    """Run every trial, choose per strategy, write ``tuned/<suite>.yaml``; return its content."""
    configs = trial_configs(suite, budget, tasks)
    run_all(configs, out, cache, options or ExecutorOptions())
    records = {r["run_id"]: r for r in find_records([out])}
    first = configs[0]
    result = {"protocol": {"suite": suite["suite"], "stream": first.stream,
                           "backbone": first.backbone, "seed": first.seed, "epochs": first.epochs,
                           "steps_per_task": first.steps_per_task, "tasks": tasks,
                           "budget": budget,
                           "score": "final average accuracy on the tasks' validation splits",
                           "eligible": "every kind of mask changed on every task"},
              "strategies": {}}
    for strategy in dict.fromkeys(c.strategy for c in configs):
        trials = [trial_entry(c, records.get(c.run_id)) for c in configs
                  if c.strategy == strategy]
        best = choose(trials)
        result["strategies"][strategy] = {
            "chosen": dict(best["hparams"]) if best else None,  # a copy: no YAML alias
            "val_acc": best["val_acc"] if best else None, "trials": trials}
    path = Path(tuned_file) if tuned_file else tuned_path(suite["suite"])
    if path.is_file():
        result = merge_tuned(yaml.safe_load(path.read_text()), result)
    atomic_write_text(path, yaml.safe_dump(result, sort_keys=False))
    return result


def merge_tuned(old: dict | None, new: dict) -> dict:
    """``new`` plus the strategies of ``old`` it did not tune, when both were tuned under the
    same protocol (tuning one strategy keeps the others' entries); else ``new`` alone."""
    if not old or old.get("protocol") != new["protocol"]:
        return new
    return {**new, "strategies": {**old.get("strategies", {}), **new["strategies"]}}
