"""Hyperparameters chosen on validation data: disjoint deterministic splits, tuning that never
touches test data, the same budget for every strategy, tuned values that reach the runs."""

import json
import math
from pathlib import Path

import pytest
import torch
from test_cli import run_main
from torch.utils.data import Dataset

from benchmarks.data.streams import build_stream
from benchmarks.suitefile import SuiteError, load_suite
from benchmarks.suites import expand
from benchmarks.tuning import choose, trial_hparams, tune
from strategies import STRATEGIES

ROOT = Path(__file__).resolve().parent.parent


def image_keys(ds) -> set[bytes]:
    return {ds[i][0].numpy().tobytes() for i in range(len(ds))}


@pytest.mark.slow
def test_validation_split_is_disjoint_from_train_and_test_and_deterministic():
    a, b = build_stream("mnist5k-split5", 3), build_stream("mnist5k-split5", 3)
    for ta, tb in zip(a.tasks, b.tasks, strict=True):
        val = image_keys(ta.val)
        assert val == image_keys(tb.val)
        assert not val & image_keys(ta.train)
        assert not val & image_keys(ta.test)
    other = build_stream("mnist5k-split5", 4).tasks[0].val
    assert image_keys(other) != image_keys(a.tasks[0].val) or len(other) == 0


def test_every_strategy_gets_the_same_budget_with_its_paper_values_first():
    budget = 4
    for name, info in STRATEGIES.items():
        trials = trial_hparams(name, budget, seed=0)
        grid = math.prod(len(v) for v in info.search_space.values())
        assert len(trials) == min(budget, grid), name
        assert len({json.dumps(t, sort_keys=True) for t in trials}) == len(trials), name
        assert trials[0] == {k: info.hparams[k] for k in info.search_space}, name
        assert trial_hparams(name, budget, seed=0) == trials  # seeded
    # all but the classifier and the prompt methods in their papers' form (3 rates, no head)
    smaller = {name for name, i in STRATEGIES.items()
               if math.prod(map(len, i.search_space.values())) < budget}
    assert smaller == {"classifier", "l2p", "dualprompt", "coda-prompt"}


class Untouchable(Dataset):
    """A test split that fails the run if anything reads it."""

    def __len__(self):
        raise AssertionError("test data was read during tuning")

    def __getitem__(self, i):
        raise AssertionError("test data was read during tuning")


@pytest.mark.slow
def test_tune_never_reads_test_data_and_its_file_reaches_the_runs(tmp_path, cache_dir,
                                                                   monkeypatch):
    import benchmarks.runner

    real = benchmarks.runner.build_stream

    def guarded(*args, **kwargs):
        stream = real(*args, **kwargs)
        for task in stream.tasks:
            task.test = Untouchable()
        return stream

    monkeypatch.setattr(benchmarks.runner, "build_stream", guarded)
    monkeypatch.setattr("benchmarks.suites.TUNED_DIR", tmp_path / "tuned")
    suite = {**load_suite("smoke"), "strategies": ["piggyback", "classifier"]}
    result = tune(suite, tmp_path / "trials", cache_dir, budget=2, tasks=2)

    assert result["protocol"]["tasks"] == 2 and result["protocol"]["budget"] == 2
    for name in ("piggyback", "classifier"):
        entry = result["strategies"][name]
        assert len(entry["trials"]) == len(trial_hparams(name, 2))
        assert all(t["masks_moved"] is not None for t in entry["trials"])
        best = choose(entry["trials"])
        assert entry["chosen"] == best["hparams"] and entry["val_acc"] == best["val_acc"]
    text = (tmp_path / "tuned" / "smoke.yaml").read_text()
    assert "&id" not in text  # chosen values written out, not as a YAML alias of a trial

    configs = expand({**suite, "hparams_from": "tuned"})
    for config in configs:
        chosen = result["strategies"][config.strategy]["chosen"]
        assert config.hparams_source == "tuned"
        assert all(config.hparams[k] == v for k, v in chosen.items())
    user = expand({**suite, "hparams_from": "tuned", "hparams": {"piggyback": {"init": 0.02}}})
    assert {c.strategy: c.hparams_source for c in user} == {
        "piggyback": "tuned+user", "classifier": "tuned"}
    with pytest.raises(SuiteError, match="no values for 'meat'"):
        expand({**suite, "strategies": ["meat"], "hparams_from": "tuned"})


def test_a_trial_whose_masks_never_moved_is_chosen_only_if_no_trial_moved_them():
    static = {"hparams": {"lr": 1}, "val_acc": 0.9, "masks_moved": False}
    moved = {"hparams": {"lr": 2}, "val_acc": 0.6, "masks_moved": True}
    tie = {"hparams": {"lr": 3}, "val_acc": 0.6, "masks_moved": True}
    unfinished = {"hparams": {"lr": 4}, "val_acc": None, "masks_moved": None}
    assert choose([static, moved, tie, unfinished]) is moved  # ties: the earlier
    assert choose([static, unfinished]) is static
    assert choose([unfinished]) is None


def test_trials_score_validation_accuracy_of_the_first_tasks_only():
    stream = build_stream("mnist5k-split5", 0).validation_only(2)
    assert len(stream.tasks) == 2
    assert all(t.test is t.val for t in stream.tasks)
    assert torch.equal(stream.tasks[0].test[0][0], stream.tasks[0].val[0][0])


def test_cli_without_a_tuned_file_says_how_to_make_it(tmp_path):
    suite = tmp_path / "never_tuned.yaml"
    suite.write_text((ROOT / "configs" / "smoke.yaml").read_text())
    out = tmp_path / "out"
    r = run_main("--suite", str(suite), "--hparams", "tuned", "--out", str(out))
    assert r.returncode == 2
    assert "run_benchmark.py tune --suite never_tuned" in r.stderr
    assert not out.exists()


@pytest.mark.slow
def test_a_suite_that_runs_on_tuned_values_can_be_tuned_before_its_file_exists(
        tmp_path, cache_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    import run_benchmark

    monkeypatch.setattr("benchmarks.suites.TUNED_DIR", tmp_path / "tuned")
    suite = tmp_path / "uses_tuned.yaml"
    suite.write_text((ROOT / "configs" / "smoke.yaml").read_text() + "\nhparams_from: tuned\n")
    code = run_benchmark.main(["tune", "--suite", str(suite), "--strategies", "classifier",
                               "--budget", "1", "--tune-tasks", "1", "--quiet",
                               "--out", str(tmp_path / "trials"), "--cache", str(cache_dir)])
    assert code == 0
    configs = expand({**load_suite(str(suite)), "strategies": ["classifier"]})
    assert [c.hparams_source for c in configs] == ["tuned"]


def test_tuning_one_strategy_keeps_the_others_entries_under_the_same_protocol():
    from benchmarks.tuning import merge_tuned

    old = {"protocol": {"budget": 8}, "strategies": {"meat": {"chosen": {"tau": 1.0}},
                                                     "hat": {"chosen": {"c": 0.75}}}}
    new = {"protocol": {"budget": 8}, "strategies": {"hat": {"chosen": {"c": 1.5}}}}
    merged = merge_tuned(old, new)
    assert merged["strategies"] == {"meat": {"chosen": {"tau": 1.0}}, "hat": {"chosen": {"c": 1.5}}}
    assert merge_tuned({**old, "protocol": {"budget": 4}}, new) == new  # other protocol: replaced
    assert merge_tuned(None, new) == new
