"""``strategies.make_strategy``: a registered strategy in a user's own Avalanche loop."""

import re
from pathlib import Path

import pytest
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin

from benchmarks.runner import prepare_backbone, run_one, seed_everything
from benchmarks.streams import build_stream
from benchmarks.suitefile import load_suite
from benchmarks.suites import expand
from strategies import make_strategy

STEPS = 4


def test_a_users_loop_with_make_strategy_reproduces_the_runners_meat_numbers(tmp_path,
                                                                             cache_dir):
    (config,) = expand({**load_suite("smoke"), "strategies": ["meat"], "steps_per_task": STEPS})
    record = run_one(config, tmp_path, cache_dir, progress=False)

    # the README's loop: the suite's stream, the same base backbone and seed
    seed_everything(config.seed)
    stream = build_stream(config.stream, config.seed)
    backbone = prepare_backbone(config, stream, cache_dir)[0]
    benchmark = stream.to_benchmark()
    seed_everything(config.seed)
    strategy = make_strategy("meat", backbone, benchmark, steps_per_task=STEPS,
                             batch_size=config.batch_size,
                             evaluator=EvaluationPlugin(accuracy_metrics(experience=True),
                                                        loggers=[]))
    for i, experience in enumerate(benchmark.train_stream):
        strategy.train(experience)
        metrics = strategy.eval(benchmark.test_stream[: i + 1])
        for j in range(i + 1):
            acc = metrics[f"Top1_Acc_Exp/eval_phase/test_stream/Task{j:03d}/Exp{j:03d}"]
            assert acc == pytest.approx(record["acc_matrix"][i][j], abs=1e-12), (i, j)
        assert strategy.probe.probe_acc[i] == pytest.approx(record["probe_acc"][i], abs=1e-12)


def test_make_strategy_names_a_wrong_head_init():
    with pytest.raises(ValueError, match="head_init must be one of"):
        make_strategy("meat", None, None, head_init="zeros")


def test_the_readmes_own_loop_runs():
    """The README's example, verbatim but for a budget of 2 steps per task."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert "make_strategy(" in code and "steps_per_task=150" in code
    scope = {}
    exec(code.replace("steps_per_task=150", "steps_per_task=2"), scope)  # noqa: S102
    accuracies = [v for k, v in scope["metrics"].items() if k.startswith("Top1_Acc_Exp")]
    assert len(accuracies) == 5 and all(0 <= a <= 1 for a in accuracies)
