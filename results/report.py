"""The report of a set of finished runs: tables (Markdown, LaTeX, CSV) and figures (PNG, PDF).

``write_tables`` and ``write_report`` read records only. Files, under ``out``:

- ``summary.{md,tex,csv}``: per (stream, backbone, strategy) final average accuracy, average
  incremental accuracy, forgetting, BWT, gain over the probe, storage per task and in total,
  training time — mean ± std over seeds, with n and where the hyperparameters come from (CSV:
  numeric means and stds);
- ``time.{md,tex,csv}``: per (stream, backbone, strategy) where the runs' seconds went: training
  and its steps, evaluation, probes, the passes outside training and the images they read
  (``results.timing.time_table``);
- ``hparams.{md,tex,csv}``: every strategy's hyperparameter values and their source (paper,
  tuned, user);
- ``masks.{md,tex,csv}``: per mask strategy, task and mask kind, the % of entries changed from
  their initial state and the % kept (means over seeds), and on how many seeds nothing changed;
- ``per_task_<stream>_<backbone>.{md,tex,csv}``: the paper-style table — final accuracy per
  task (rows: tasks, then average, then total storage in MiB; columns: strategies) beside the
  probe reference (``results.per_task.per_task_table``);
- ``task_agnostic.{md,tex,csv}`` (runs evaluated without task ids): final accuracy in the
  task- and class-incremental settings, class-incremental forgetting, task-inference accuracy,
  the class-incremental difference to the classifier and the task that task inference collapsed
  onto, under the chance levels;
- ``headline_<stream>.{md,tex,csv}``: every strategy on one line, ranked, with task ids on
  each backbone and without them, beside the classifier, SimpleCIL and the joint probe
  (``results.headline``; the README quotes it);
- ``pairwise.{md,tex,csv}`` (where a stream and backbone have two strategies or more): every
  pair of strategies per stream and backbone, paired by seed, in both settings, with the
  verdict;
- ``acc_matrices.md`` and ``acc_matrix/<run_id>.csv``: every run's accuracy matrix with task ids
  (and its class-incremental one, without);
- figures from ``results.figures``.

CSV floats are rounded (``results.formats.to_csv``); task numbers a person reads start at 1.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from atomicio import atomic_write_text
from results.arms import group_records
from results.formats import safe_name, to_csv, to_markdown, write_frame
from results.headline import headline_table, pairwise_table
from results.masks import movement_table
from results.per_task import acc_matrix_frame, per_task_table, probe_note
from results.summary import budget_note, hparams_table, readable_summary, summary
from results.task_agnostic import chance_note, rules_table, task_agnostic_table
from results.timing import time_table, timing_note

RULES_NOTE = ("Every task-inference rule on every run (strategies.md, \"Without task ids\"): last "
              "accuracy % over every seen class (task inferred right %); * the rule chosen on "
              "validation.")
PAIRWISE_NOTE = ("Every pair of strategies on each stream and backbone, the one ranked higher "
                 "with task ids first: final average accuracy difference, paired by seed, with "
                 "its 95% t-interval; a ranking holds only where the interval excludes 0.")


def run_order(records: list[dict]) -> list[dict]:
    """Records in a fixed order (stream, backbone, strategy, seed), whatever order they were
    found in, so a report is the same whether written by a run or rebuilt from its folders."""
    return sorted(records, key=lambda r: (r["config"]["stream"], r["config"]["backbone"],
                                          r["config"]["strategy"], r["config"]["seed"]))


def write_tables(records: list[dict], out: Path) -> list[Path]:
    out = Path(out)
    records = run_order(records)
    stats = summary(records)
    notes = [n for n in (budget_note(records), timing_note(records)) if n]
    paths = write_frame(readable_summary(stats), out, "summary", index=False, csv_df=stats,
                        note="\n".join(notes) or None)
    paths += write_frame(time_table(records), out, "time", index=False,
                         note=timing_note(records))
    paths += write_frame(hparams_table(records), out, "hparams", index=False)
    masks = movement_table(records)
    if not masks.empty:
        paths += write_frame(masks, out, "masks", index=False)
    agnostic = task_agnostic_table(records)
    if not agnostic.empty:
        paths += write_frame(agnostic, out, "task_agnostic", index=False,
                             note=chance_note(records))
    for stream in dict.fromkeys(r["config"]["stream"] for r in records):
        paths += write_frame(headline_table(records, stream), out,
                             f"headline_{safe_name(stream)}", index=False)
    pairs = pairwise_table(records)
    if not pairs.empty:
        paths += write_frame(pairs, out, "pairwise", index=False, note=PAIRWISE_NOTE)
    rules = rules_table(records)
    if not rules.empty:
        paths += write_frame(rules, out, "task_inference_rules", index=False, note=RULES_NOTE)
    for (stream, backbone), recs in group_records(records).items():
        table = per_task_table(recs)
        table.index.name = f"{backbone} / {stream}"
        paths += write_frame(table, out, f"per_task_{safe_name(stream)}_{safe_name(backbone)}",
                             note=probe_note(recs))
    blocks = []
    for r in records:
        m = acc_matrix_frame(r)
        cfg = r["config"]
        path = out / "acc_matrix" / f"{r['run_id']}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, to_csv(m))
        paths.append(path)
        blocks.append(f"### {cfg['strategy']} — {cfg['backbone']} / {cfg['stream']}, seed "
                      f"{cfg['seed']} (`{r['run_id']}`)\n\nWith task ids (task-incremental):"
                      f"\n\n{to_markdown(m)}\n")
        if "cil_acc_matrix" in r:
            m = acc_matrix_frame(r, "cil_acc_matrix")
            path = out / "acc_matrix" / f"{r['run_id']}_class_incremental.csv"
            atomic_write_text(path, to_csv(m))
            paths.append(path)
            blocks.append(f"Without task ids (class-incremental, task inference: "
                          f"{r['task_inference']}):\n\n{to_markdown(m)}\n")
    atomic_write_text(out / "acc_matrices.md",
                      "# Accuracy matrices (%): row = after training task i, column = task j\n\n"
                      + "\n".join(blocks))
    paths.append(out / "acc_matrices.md")
    return paths


REPORT_SUFFIXES = {".md", ".tex", ".csv", ".png", ".pdf"}


class ReportError(ValueError):
    """The report cannot be written where it was asked to be."""


def check_report_folder(out: Path) -> None:
    """:class:`ReportError` unless ``out`` is absent or holds only what :func:`write_report`
    writes (so replacing it loses nothing of the user's)."""
    out = Path(out)
    if out.exists() and not (out.is_dir() and all(
            f.is_dir() or f.suffix in REPORT_SUFFIXES for f in out.rglob("*"))):
        raise ReportError(f"{out} holds files that are not a report; give another report "
                          "folder (--out)")


def write_report(records: list[dict], out: Path) -> list[Path]:
    """Tables and figures for ``records`` (each with ``_folder``, as ``find_records`` gives),
    replacing the folder ``out`` whole: the report is drawn in a temporary sibling folder that
    then takes ``out``'s place, so no file of an earlier report stays beside the new ones, and an
    interrupted report leaves the earlier one as it was. ``out`` must not hold other files
    (:class:`ReportError`)."""
    from results.figures import all_figures

    out = Path(out)
    check_report_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    records = run_order(records)
    run_dirs = {r["run_id"]: Path(r["_folder"]) for r in records if r.get("_folder")}
    draft = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.draft-"))
    try:
        paths = write_tables(records, draft) + all_figures(records, run_dirs, draft)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            draft.rename(out)
            shutil.rmtree(old)
        else:
            draft.rename(out)
    except BaseException:
        shutil.rmtree(draft, ignore_errors=True)
        raise
    return [out / p.relative_to(draft) for p in paths]
