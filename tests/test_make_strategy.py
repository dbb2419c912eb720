"""``strategies.make_strategy``: a registered strategy in a user's own Avalanche loop."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin

from benchmarks.data.streams import build_stream
from benchmarks.prepare import prepare_backbone, seed_everything
from benchmarks.runner import run_one
from benchmarks.suitefile import load_suite
from benchmarks.suites import expand
from strategies import make_strategy

STEPS = 4
ROOT = Path(__file__).resolve().parent.parent


def runner_and_users_loop(tmp_path, cache_dir, **make_kwargs):
    """The smoke suite's MEAT run by the runner, and the README's loop set up on the suite's
    stream, the same base backbone and seed: (the run's record, the benchmark, the strategy)."""
    task_agnostic = make_kwargs.get("task_agnostic", False)
    (config,) = expand({**load_suite("smoke"), "strategies": ["meat"], "steps_per_task": STEPS,
                        "task_agnostic": task_agnostic})
    record = run_one(config, tmp_path, cache_dir, progress=False)
    seed_everything(config.seed)
    stream = build_stream(config.stream, config.seed)
    backbone = prepare_backbone(config, stream, cache_dir)[0]
    benchmark = stream.to_benchmark()
    seed_everything(config.seed)
    strategy = make_strategy("meat", backbone, benchmark, steps_per_task=STEPS,
                             batch_size=config.batch_size, **make_kwargs)
    return record, benchmark, strategy


@pytest.mark.slow
def test_a_users_loop_with_make_strategy_reproduces_the_runners_meat_numbers(tmp_path,
                                                                             cache_dir):
    record, benchmark, strategy = runner_and_users_loop(
        tmp_path, cache_dir,
        evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]))
    for i, experience in enumerate(benchmark.train_stream):
        strategy.train(experience)
        metrics = strategy.eval(benchmark.test_stream[: i + 1])
        for j in range(i + 1):
            acc = metrics[f"Top1_Acc_Exp/eval_phase/test_stream/Task{j:03d}/Exp{j:03d}"]
            assert acc == pytest.approx(record["acc_matrix"][i][j], abs=1e-12), (i, j)
        assert strategy.probe.probe_acc[i] == pytest.approx(record["probe_acc"][i], abs=1e-12)


@pytest.mark.slow
def test_a_users_loop_gets_the_runners_class_incremental_predictions(tmp_path, cache_dir):
    record, benchmark, strategy = runner_and_users_loop(tmp_path, cache_dir, task_agnostic=True)
    for i, experience in enumerate(benchmark.train_stream):
        strategy.train(experience)
        strategy.eval(benchmark.test_stream[: i + 1])  # as the runner (its loader draws a seed)
        fields = strategy.class_incremental.after_task(i)
    for key, value in fields.items():  # every rule's matrices, the chosen rule, the references
        assert value == record[key], key


def test_make_strategy_names_a_wrong_head_init():
    with pytest.raises(ValueError, match="head_init must be one of"):
        make_strategy("meat", None, None, head_init="zeros")


@pytest.mark.slow
def test_the_readmes_own_loop_runs_as_written_in_a_fresh_interpreter():
    """The README's example, unchanged, in a new Python process (nothing imported before it: the
    suite's backbones must be registered by importing ``strategies``), prints each task's
    accuracy after every task: row i of the accuracy matrix, tasks 0..i."""
    code = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    assert "make_strategy(" in code
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    printed = re.findall(r"Top1_Acc_Exp/eval_phase/test_stream/Task(\d+)/Exp\d+ = ([\d.]+)",
                         r.stdout)
    assert [int(t) for t, _ in printed] == [j for i in range(5) for j in range(i + 1)], r.stdout
    final = [float(a) for _, a in printed[-5:]]
    assert all(0 <= a <= 1 for a in final) and sum(final) / 5 > 0.5  # chance: 2 classes a task
