"""The committed reference results (``results/data``, written by ``make results``) are what the
committed code makes of the committed records, and those records are the runs of the committed
``standard`` suite."""

import re
from pathlib import Path

from benchmarks.config import RunConfig
from benchmarks.suitefile import load_suite
from benchmarks.suites import expand
from results.records import find_records
from results.report import write_tables
from strategies import STRATEGIES

DATA = Path(__file__).resolve().parent.parent / "results" / "data"
HEAD_MARGIN = 0.02  # 2 points of training accuracy below the probe


def test_committed_records_are_the_standard_suite():
    records = find_records([DATA / "runs"])  # schema and checksum checked on load
    assert sorted(r["run_id"] for r in records) == sorted(
        c.run_id for c in expand(load_suite("standard")))
    assert all(r["run_id"] == RunConfig.from_dict(r["config"]).run_id for r in records)


def test_committed_tables_regenerate_from_committed_records(tmp_path):
    written = write_tables(find_records([DATA / "runs"]), tmp_path)
    committed = DATA / "report"
    rebuilt = {p.relative_to(tmp_path) for p in written}
    on_disk = {p.relative_to(committed) for p in committed.rglob("*")
               if p.is_file() and p.suffix in (".md", ".tex", ".csv")}
    assert rebuilt == on_disk
    for rel in sorted(rebuilt):
        assert (tmp_path / rel).read_text() == (committed / rel).read_text(), rel


def test_committed_results_test_the_methods_they_name():
    """At the standard budget MEAT's FFN masks, Piggyback's and SupSup's scores and HAT's gates
    changed on every task of every run (MEAT's token masks are reported, not required: on
    LaViT's 4- and 16-token layers some tasks keep them all), and HAT's heads converged: on
    mnist5k-nuisance5's training data the trained model is within HEAD_MARGIN of the converged
    probe. (On mnist5k-split5 the probe fits the two-digit tasks' training data at 93-100% and
    HAT's gated features end 3 points below it to 0.1 above: HAT's masking, with its test
    accuracy above the classifier's, not a head that failed to train.)"""
    records = find_records([DATA / "runs"])
    for r in records:
        name = r["config"]["strategy"]
        for task in r["mask_movement"]:
            assert set(task) == set(STRATEGIES[name].mask_kinds)
            assert all(m["changed"] > 0 for kind, m in task.items() if kind != "token"), (
                name, r["run_id"])
        if name == "hat" and r["config"]["stream"] == "mnist5k-nuisance5":
            gaps = [a - p for a, p in zip(r["train_acc"], r["probe_train_acc"], strict=True)]
            assert sum(gaps) / len(gaps) >= -HEAD_MARGIN, r["run_id"]


def test_the_standard_stream_needs_pre_training():
    """mnist5k-nuisance5: the probe on pre-trained features beats the probe on a randomly
    initialized backbone by >= 10 points on average, and one fine-tuned copy per task beats the
    pre-trained probe by >= 5 points (means over tasks and seeds, per backbone)."""
    records = [r for r in find_records([DATA / "runs"])
               if r["config"]["stream"] == "mnist5k-nuisance5"]
    assert records
    for backbone in {r["config"]["backbone"] for r in records}:
        mine = [r for r in records if r["config"]["backbone"] == backbone]
        classifier = [r for r in mine if r["config"]["strategy"] == "classifier"]
        gain = [sum(p - q for p, q in zip(r["probe_acc"], r["random_probe_acc"], strict=True))
                / len(r["probe_acc"]) for r in classifier]
        assert sum(gain) / len(gain) >= 0.10, backbone
        individual = [r["metrics"]["final_avg_acc"] - sum(r["probe_acc"]) / len(r["probe_acc"])
                      for r in mine if r["config"]["strategy"] == "individual"]
        assert sum(individual) / len(individual) >= 0.05, backbone


def test_committed_task_files_load_into_todays_models():
    """Every committed tasks/task_<t>.pt reads through models.tasks, holds its task's
    statistics for task prediction, and imports into a MEAT model built by today's code."""
    import torch

    from models.factory import create_backbone
    from models.tasks import load_task_file
    from strategies.registry import TrainSettings

    folders = sorted({p.parent.parent for p in (DATA / "runs").glob("*/tasks/task_0.pt")})
    assert folders
    for folder in folders:
        rec = next(r for r in find_records([folder]))
        config = rec["config"]
        strategy = STRATEGIES[config["strategy"]].build(
            create_backbone(config["backbone"]), config["hparams"], TrainSettings())
        for t in range(len(rec["tasks"])):
            state = load_task_file(folder / "tasks" / f"task_{t}.pt")
            assert {s.kind for s in state.values()} >= {"token", "task statistics"}
            strategy.model.import_task(t, {k: s.value for k, s in state.items()})
            masks = [m for m in strategy.model.modules() if getattr(m, "kind", None) == "token"]
            assert all(m.binary(t).dtype == torch.bool for m in masks)


def test_committed_class_incremental_results_meet_the_protocols_bar():
    """Without task ids: on mnist5k-nuisance5 the chosen task predictor infers the task right
    for >= 65% of test samples on average over the seeds of each (backbone, strategy); on every
    committed run the last accuracy is above chance (1 / classes seen); and MEAT is above
    SimpleCIL on mnist5k-nuisance5 with ViT by a paired 95% interval that excludes 0."""
    from results.stats import paired_difference

    records = find_records([DATA / "runs"])
    groups: dict[tuple, list] = {}
    for r in records:
        c = r["config"]
        groups.setdefault((c["stream"], c["backbone"], c["strategy"]), []).append(r)
    for key, runs in groups.items():
        inferred = [r["metrics"]["task_inference_acc"] for r in runs]
        assert key[0] != "mnist5k-nuisance5" or sum(inferred) / len(inferred) >= 0.65, key
        for r in runs:
            chance = 1 / sum(len(task["classes"]) for task in r["tasks"])
            assert r["metrics"]["cil_last_acc"] > chance, (key, r["run_id"])
    meat = sorted(groups[("mnist5k-nuisance5", "vit_micro", "meat")],
                  key=lambda r: r["config"]["seed"])
    d = paired_difference([r["metrics"]["cil_last_acc"] for r in meat],
                          [r["metrics"]["simplecil_last_acc"] for r in meat])
    assert len(meat) == 5 and d.low > 0, d


ROOT = DATA.parent.parent
# the sections that quote the committed results: (page, first heading, end heading); the prompt
# heads section quotes a separate suite (configs/prompt-heads.yaml), not the committed records
QUOTING = [("README.md", "## Reference results", "**Storage on the MEAT paper's backbones**",
            None),
           ("docs/results.md", "## Reference results: the `standard` suite",
            "## Reference numbers", ("### The prompt methods", "### Without task ids"))]
INTERVAL = re.compile(r"([+-]\d+\.\d) \[([+-]\d+\.\d), ([+-]\d+\.\d)\]")
MEAN_STD = re.compile(r"\d+\.\d ± \d+\.\d")


def quoting_text() -> str:
    """The docs' sections that quote the committed results, with − written as -."""
    parts = []
    for page, start, end, skip in QUOTING:
        text = (ROOT / page).read_text()
        text = text[text.index(start):text.index(end)]
        if skip:
            text = text[:text.index(skip[0])] + text[text.index(skip[1]):]
        parts.append(text.replace("−", "-"))
    return "\n".join(parts)


def intervals(text: str) -> set[tuple[float, float, float]]:
    return {tuple(float(x) for x in m) for m in INTERVAL.findall(text)}


def test_the_readme_headline_is_the_committed_report():
    table = (DATA / "report" / "headline_mnist5k-nuisance5.md").read_text().strip()
    assert table in (ROOT / "README.md").read_text()


def test_every_number_the_docs_quote_is_in_the_committed_report():
    """Each paired difference ("+1.8 [+1.1, +2.6]", either way round) and each "mean ± std" in
    the sections that quote the committed results is one the committed report states
    (``pairwise.md`` holds every pair of strategies), so the docs cannot drift from a
    regenerated ``results/data``."""
    report = "\n".join(p.read_text() for p in sorted((DATA / "report").glob("*.md")))
    known = intervals(report)
    known |= {(-m, -hi, -lo) for m, lo, hi in known}
    quoted = quoting_text()
    stale = sorted(intervals(quoted) - known)
    assert not stale, f"paired differences not in results/data/report: {stale}"
    stale = sorted(set(MEAN_STD.findall(quoted)) - set(MEAN_STD.findall(report)))
    assert not stale, f"mean ± std values not in results/data/report: {stale}"
