"""What a run tells its user: a backbone starting from random weights is named (and recorded as
``base: none``), base pre-training announces itself, a finished run is reported as skipped."""

import dataclasses

from test_sweeps import smoke_config

from benchmarks.data.streams import build_stream
from benchmarks.prepare import prepare_backbone
from benchmarks.runner import run_one


def test_random_weights_are_named_and_recorded(tmp_path, capsys):
    stream = dataclasses.replace(build_stream("mnist5k-split5", 0), base=None)  # own data
    _, _, base = prepare_backbone(smoke_config("classifier"), stream, tmp_path)
    assert base == {"base": "none"}
    assert "starts from random weights" in capsys.readouterr().err


def test_base_pretraining_announces_itself_once(tmp_path, capsys):
    config = smoke_config("classifier", backbone="vit_nano", base_epochs=1)
    stream = build_stream(config.stream, config.seed)
    prepare_backbone(config, stream, tmp_path)
    err = capsys.readouterr().err
    assert "pre-training vit_nano on" in err and "base test accuracy" in err
    prepare_backbone(config, stream, tmp_path)  # cached: silent
    assert "pre-train" not in capsys.readouterr().err


def test_a_finished_run_is_reported_as_skipped(tmp_path, cache_dir, capsys):
    config = smoke_config("classifier")
    first = run_one(config, tmp_path, cache_dir, progress=False)
    assert "skipped" not in capsys.readouterr().err
    assert run_one(config, tmp_path, cache_dir, progress=False)["acc_matrix"] == first["acc_matrix"]
    assert f"{config.run_id}: skipped (finished earlier" in capsys.readouterr().err
