"""Each run setting is declared once (a ``RunConfig`` field made with ``setting``): the CLI
flags, the suite file's keys and checks, the strategies' ``TrainSettings`` and the run id come
from that declaration, so a new optional setting is one field."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from benchmarks.commands.parsing import UsageError, add_setting_flags
from benchmarks.config import RunConfig, integer, setting, settings, shared_settings
from benchmarks.suitefile import DEFAULTS, KEY_TYPES, SuiteError, check_values
from run_benchmark import run_parser

BASE = {"suite": "s", "stream": "mnist5k-split5", "backbone": "vit_micro", "strategy": "meat",
        "seed": 0, "hparams": {"lr": 0.1}, "hparams_source": "paper"}

# A setting a researcher might add: one field, nothing else.
WithWarmup = dataclasses.make_dataclass(
    "WithWarmup",
    [("warmup_epochs", int, setting(0, integer(0), "epochs of linear warm-up", neutral=0))],
    bases=(RunConfig,), frozen=True)


def test_a_new_setting_is_one_field():
    parser = argparse.ArgumentParser()
    add_setting_flags(parser, WithWarmup)
    assert parser.parse_args(["--warmup-epochs", "3"]).warmup_epochs == 3
    assert parser.parse_args([]).warmup_epochs is None  # not given: the suite's value
    with pytest.raises(SystemExit):
        parser.parse_args(["--warmup-epochs", "-1"])
    check = settings(WithWarmup)["warmup_epochs"].check
    assert check.test(2) and not check.test(-1) and not check.test(True)
    # at its default the run id and the recorded config are those of a run without it
    plain, warm = RunConfig(**BASE), WithWarmup(**BASE)
    assert warm.run_id == plain.run_id and warm.to_dict() == plain.to_dict()
    assert warm.replace(warmup_epochs=2).run_id != plain.run_id
    assert warm.replace(warmup_epochs=2).to_dict()["warmup_epochs"] == 2

    @dataclasses.dataclass
    class Train:  # a TrainSettings that takes it
        epochs: int = 1
        warmup_epochs: int = 0

    assert shared_settings(warm.replace(warmup_epochs=2), Train) == {"epochs": 10,
                                                                      "warmup_epochs": 2}


def test_the_suite_file_and_the_cli_read_the_declarations():
    flags = {a.dest: a for a in run_parser()._actions}
    for name, s in settings().items():
        assert KEY_TYPES[name][1] == s.check.wanted
        assert name in DEFAULTS
        assert flags[name].help == s.help
    assert DEFAULTS["precision"] == RunConfig(**BASE).precision == "fp32"
    with pytest.raises(SuiteError, match="precision must be one of fp32, bf16, got 'fp16'"):
        check_values({"precision": "fp16"})


def test_a_device_flag_that_cannot_run_here_is_a_usage_error(monkeypatch):
    import torch

    from run_benchmark import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match="no CUDA device"):
        resolve_device("cuda")


def test_how_a_run_gets_its_inputs_is_not_part_of_its_id():
    plain = RunConfig(**BASE)
    fetched = plain.replace(download=True)
    assert fetched.run_id == plain.run_id and fetched.to_dict()["download"] is True
    assert "download" not in plain.to_dict()
