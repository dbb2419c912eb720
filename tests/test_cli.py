"""Every CLI error path: one line on stderr naming the problem and the valid choices, exit 2,
nothing written."""

import contextlib
import io
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import run_benchmark

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "run_benchmark.py"), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def run_main(*args):
    """``run_benchmark.main(args)`` in this process (the error paths end before any training),
    with its exit code and output, as ``run_cli`` gives them without a new interpreter."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = run_benchmark.main(list(args))
        except SystemExit as e:  # argparse errors
            code = e.code
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--suite", "nope"], "unknown suite 'nope'; valid: "),
        (["--suite", "smoke", "--strategies", "finetune,bogus"], "unknown strategy 'bogus'"),
        (["--suite", "smoke", "--backbone", "resnet50"], "unknown backbone 'resnet50'"),
        (["--suite", "smoke", "--epochs", "0"], "must be an integer >= 1"),
        (["--suite", "smoke", "--epochs", "two"], "must be an integer >= 1"),
        (["--suite", "smoke", "--seeds", "a,b"], "seeds must be integers"),
        (["--suite", "smoke", "--seeds", "0,1,0"], "seed 0 is given twice"),
        (["--suite", "smoke", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["--suite", "smoke", "--head-init", "zeros"], "invalid choice: 'zeros'"),
        (["--suite", "smoke", "--stream", "cifar10-split5", "--data-root", "/no/such/dir"],
         "/no/such/dir"),
        (["--suite", "smoke", "--stream", "cifar10-split5"], "--data-root"),
        (["--suite", "smoke", "--data-root", str(ROOT)],
         "is bundled data and reads no folder; give a local dataset's stream"),
        (["--suite", "smoke", "--stream", "mnist5k-splitx"], "unknown stream"),
        (["--suite", "smoke", "--backbone", "deit_tiny_patch16_224"], "does not divide"),
        (["--suite", "smoke", "--pretrained", "/no/such.pt"], "checkpoint file not found"),
        (["report", "/no/such/run"], "run folder not found"),
        (["report", str(ROOT), "--compare", "meat"], "give two different strategies as A,B"),
        (["--suite", "smoke", "--steps-per-task", "0"], "must be an integer >= 1"),
        (["storage", "--backbone", "vit_nano", "--classes", "3,x"], "expected class counts"),
        (["storage", "--backbone", "vit_nano", "--classes", "0"], "expected class counts"),
        (["storage", "--backbone", "nope", "--classes", "3"], "unknown backbone 'nope'"),
        (["storage", "--backbone", "vit_nano", "--classes", "3", "--format", "xml"],
         "invalid choice: 'xml'"),
        (["storage", "--classes", "3"], "required: --backbone"),
        (["backbones", "--format", "xml"], "invalid choice: 'xml'"),
        (["--suite", "paper"], "give --pretrained FILE"),
        (["--suite", "smoke", "--dropkey", "1.5"], "must be a number in [0, 1)"),
        (["--suite", "smoke", "--dropkey-schedule", "cosine"], "invalid choice: 'cosine'"),
        (["--suite", "smoke", "--executor", "slurm", "--gpus-per-run", "0.5"],
         "--gpus-per-run 0.5: Slurm allocates whole GPUs per job"),
        (["--suite", "smoke", "--precision", "fp16"], "invalid choice: 'fp16'"),
        (["--suite", "smoke", "--preprocess", "imagenet"], "invalid choice: 'imagenet'"),
        (["cache", "--suite", "paper"], "give --data-root PATH"),
        (["--suite", "smoke", "--device", "cuda", "--executor", "ray"],
         "--device cuda with --executor ray: --gpus-per-run is 0"),
        (["--suite", "smoke", "--device", "cuda", "--executor", "slurm", "--gpus-per-run", "0"],
         "give --gpus-per-run N (> 0) or --device cpu"),
        (["--suite", "smoke", "--loader-workers", "-1"], "must be an integer >= 0"),
        (["--suite", "smoke", "--epochs", "1", "--steps-per-task", "5"],
         "argument --steps-per-task: not allowed with argument --epochs"),
        (["--suite", "smoke", "--dropkey-schedule", "constant"],
         "--dropkey-schedule constant: DropKey is off in this suite (dropkey 0)"),
        (["--suite", "smoke", "--pretrained", str(ROOT / "README.md"), "--base-epochs", "3"],
         "--base-epochs: no base pre-training runs (--pretrained FILE replaces it)"),
        ([], "required: --suite"),
    ],
)
@pytest.mark.slow
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, expect):
    out = tmp_path / "out"
    commands = ("report", "storage", "backbones", "cache")
    extra = ["--out", str(out)] if args and args[0] not in commands else []
    r = run_main(*args, *extra)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert expect in lines[0]
    assert lines[0].startswith("run_benchmark.py: error: ")
    assert r.stdout == ""
    assert not out.exists()


def test_unknown_flag_lists_valid_flags():
    r = run_main("--suite", "smoke", "--epoch", "3x")
    assert r.returncode == 2
    assert "--epochs" in r.stderr and "--strategies" in r.stderr


def test_help_documents_every_flag():
    r = run_cli("--help")
    assert r.returncode == 0
    for flag in ("--suite", "--strategies", "--backbone", "--seeds", "--epochs", "--out",
                 "--device", "--head-init", "--data-root", "--pretrained"):
        assert flag in r.stdout


def test_report_on_empty_folder_is_an_error(tmp_path):
    r = run_main("report", str(tmp_path))
    assert r.returncode == 2 and "no finished run records" in r.stderr


def test_storage_command_json_matches_the_accounting_module():
    import json

    from models.factory import create_backbone
    from strategies import STRATEGIES

    res = run_main("storage", "--backbone", "vit_nano", "--classes", "3,2", "--base-classes", "5",
                  "--format", "json")
    assert res.returncode == 0, res.stderr
    bills = json.loads(res.stdout)
    # DualPrompt's expert layers (blocks 3-5) do not exist in a 2-block model: said, not billed
    assert set(bills) == set(STRATEGIES) - {"dualprompt"}
    assert res.stderr.startswith("dualprompt: no bill on vit_nano (dualprompt e_layers: none")
    nano = create_backbone("vit_nano")
    n = sum(p.numel() for p in nano.parameters())
    head = lambda c: 32 * c * 65  # noqa: E731  fp32 head of a 64-dim feature
    assert bills["classifier"]["per_task_bits"] == [head(3), head(2)]
    assert bills["individual"]["per_task_bits"] == [32 * n + head(3), 32 * n + head(2)]
    base_bits = 32 * (n + 5 * 65)
    total = base_bits + sum(bills["meat"]["per_task_bits"])
    assert bills["meat"]["total_mib"] == pytest.approx(total / 8 / 2**20)
    assert bills["lwf"]["forgets"] and not bills["piggyback"]["forgets"]


def test_storage_command_table_and_csv():
    from strategies import STRATEGIES

    table = run_main("storage", "--backbone", "vit_nano", "--classes", "3,2")
    assert table.returncode == 0 and "can forget" in table.stdout and "piggyback" in table.stdout
    csv = run_main("storage", "--backbone", "vit_nano", "--classes", "3,2", "--format", "csv")
    lines = csv.stdout.splitlines()
    assert lines[0].startswith("strategy,task,classes,bits,mib")
    assert len(lines) == 1 + 2 * (len(STRATEGIES) - 1)  # all but DualPrompt (above)


def test_bad_preprocess_in_a_suite_file_is_one_line(tmp_path):
    suite = tmp_path / "mine.yaml"
    suite.write_text("stream: mnist5k-split5\nbackbone: vit_nano\npreprocess: {name: deit, "
                     "crop: 0.9}\n")
    r = run_main("--suite", str(suite), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "unknown preprocess keys ['crop']" in r.stderr
    assert not (tmp_path / "out").exists()


def test_head_init_choices_are_the_registrys():
    """The CLI spells them out (arguments are parsed before torch loads); one vocabulary."""
    from vocab import HEAD_INIT_CHOICES

    action = next(a for a in run_benchmark.run_parser()._actions if a.dest == "head_init")
    assert tuple(action.choices) == HEAD_INIT_CHOICES


@pytest.mark.parametrize("text, expect", [
    ("hparams:\n  meat: {tau: four}\n", "hyperparameter 'tau' must be a number"),
    ("hparams:\n  adapter: {hidden: 2.5}\n", "hyperparameter 'hidden' must be an integer"),
    ("hparams: {meat: 3}\n", "hparams must be a mapping"),
    ("stream: [mnist5k-split5\n", "is not valid YAML (line 2"),
    ("- stream\n", "must be a mapping of suite keys"),
    ("seeds: [0, 0]\n", "seeds must be a list of distinct integers"),
    ("epochs: two\n", "epochs must be an integer >= 1, got 'two'"),
    ("batch_size: 3.5\n", "batch_size must be an integer >= 1"),
    ("tf32: maybe\n", "tf32 must be true or false"),
    ("img_size: big\n", "img_size must be an integer >= 1 or null"),
    ("deterministic: 1\n", "deterministic must be true or false"),
    ("loader_workers: -2\n", "loader_workers must be an integer >= 0 or null"),
    ("epochs: 2\nsteps_per_task: 10\n", "sets both epochs and steps_per_task"),
    ("exclude: [{stream: a, model: b}]\n", "exclude must be a list of {stream: NAME, backbone"),
])
def test_a_wrongly_typed_suite_file_is_one_line_naming_the_key(tmp_path, text, expect):
    suite = tmp_path / "mine.yaml"
    suite.write_text(text)
    r = run_main("--suite", str(suite), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and expect in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_exclude_drops_exactly_the_named_stream_backbone_pairs():
    from benchmarks.suitefile import load_suite
    from benchmarks.suites import expand

    suite = {**load_suite("smoke"), "stream": ["mnist5k-split5", "mnist5k-split2"],
             "backbone": ["vit_micro", "lavit_micro"], "strategies": ["classifier"]}
    pairs = [(c.stream, c.backbone) for c in expand(
        {**suite, "exclude": [{"stream": "mnist5k-split2", "backbone": "lavit_micro"}]})]
    assert pairs == [("mnist5k-split5", "vit_micro"), ("mnist5k-split5", "lavit_micro"),
                     ("mnist5k-split2", "vit_micro")]
    only_vit = expand({**suite, "exclude": [{"backbone": "lavit_micro"}]})  # every stream
    assert {c.backbone for c in only_vit} == {"vit_micro"} and len(only_vit) == 2


@pytest.mark.slow
def test_deterministic_and_loader_workers_reach_the_runs_as_flags_or_suite_keys(tmp_path):
    """Recorded in the run's config (and so its id) when set; at their defaults left out, so
    the committed runs keep their ids."""
    from benchmarks.prepare import loader_workers

    def config(*args):
        parsed = run_benchmark.run_parser().parse_args(["--strategies", "classifier", *args])
        return run_benchmark.build_configs(parsed)[1][0]

    default = config("--suite", "smoke")
    assert not {"deterministic", "loader_workers"} & set(default.to_dict())
    assert loader_workers(default) == 0  # CPU: the run's own process reads
    flags = config("--suite", "smoke", "--deterministic", "--loader-workers", "0")
    suite = tmp_path / "mine.yaml"
    suite.write_text((run_benchmark.ROOT / "configs" / "smoke.yaml").read_text()
                     + "deterministic: true\nloader_workers: 0\n")
    keys = config("--suite", str(suite))
    for c in (flags, keys):
        assert (c.deterministic, c.loader_workers, loader_workers(c)) == (True, 0, 0)
        assert {k: c.to_dict()[k] for k in ("deterministic", "loader_workers")} == {
            "deterministic": True, "loader_workers": 0}
        assert c.run_id != default.run_id
    assert loader_workers(default.replace(device="cuda")) >= 1


@pytest.mark.parametrize("flags, budget, line", [
    ([], (10, 150), "budget: 150 steps per task (suite default)"),
    (["--epochs", "1"], (1, None), "budget: 1 epoch per task (--epochs)"),
    (["--steps-per-task", "40"], (10, 40), "budget: 40 steps per task (--steps-per-task)"),
])
@pytest.mark.slow
def test_a_budget_flag_replaces_the_suites_and_the_sweep_says_which(monkeypatch, tmp_path,
                                                                     flags, budget, line):
    """The default suite trains 150 steps per task; --epochs replaces them (steps cleared, so
    the runs' configs hold one budget), --steps-per-task replaces their number. The budget
    line comes before any run starts."""
    import benchmarks.executors

    started = []

    def run_all(configs, *args, **kwargs):  # stop the sweep as the runs would start
        started.extend(configs)
        raise KeyboardInterrupt

    monkeypatch.setattr(benchmarks.executors, "run_all", run_all)
    r = run_main("--suite", "default", "--strategies", "meat", *flags,
                 "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"))
    assert r.returncode == 130, r.stderr
    assert line in r.stderr.splitlines()
    assert {(c.epochs, c.steps_per_task) for c in started} == {budget}
    assert {c.to_dict()["steps_per_task"] for c in started} == {budget[1]}


@pytest.mark.slow
def test_output_into_a_closed_pipe_ends_quietly():
    """`... | head -1`: the reader leaves early; no BrokenPipeError traceback."""
    cmd = (f"{sys.executable} {ROOT / 'run_benchmark.py'} storage --backbone vit_micro "
           "--classes 2,2,2,2,2,2,2,2,2,2 | head -1")
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True,
                       timeout=300)
    assert r.stdout.count("\n") == 1
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr


@pytest.mark.parametrize("args", [["--suite", "nope"], ["--suite", "smoke", "--epochs", "two"]])
def test_flag_and_suite_file_errors_come_before_torch_loads(args):
    """A typo costs a fraction of a second: torch is not imported when the suite name, the suite
    file or a flag is wrong."""
    code = ("import sys, run_benchmark; code = run_benchmark.main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(code)")
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("run_benchmark.py: error: ")


def test_structured_hyperparameters_pass_as_given():
    from strategies.registry import resolve_hparams

    assert resolve_hparams("meat", {"layers": [2, 5, 8]})["layers"] == [2, 5, 8]
    assert resolve_hparams("meat", {"tau": "4"})["tau"] == 4.0


@pytest.mark.parametrize("args", [
    ["backbones"],
    ["storage", "--backbone", "vit_micro", "--classes", "10,10,10,10,10"],
    ["report", "results/data/runs", "--out", "{tmp}/report"],
])
@pytest.mark.slow
def test_console_tables_fit_100_columns(args, tmp_path):
    r = run_main(*[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == 0, r.stderr
    text = [line for line in r.stdout.splitlines() if str(tmp_path) not in line]  # paths
    assert len(text) > 5 and max(map(len, text)) <= 100
