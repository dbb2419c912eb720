"""Figures a reader can trust, checked on the drawn artists of hand-made records: every accuracy
figure draws its chance level where it is, every label drawn in an axes lies inside it, a
task-agnostic report has its class-incremental heatmap, titles say which protocol, a collapsed
task inference and mixed timing conditions are flagged, strategies never share a marker and
their colors stay apart."""

import itertools

import matplotlib.colors
import matplotlib.pyplot as plt
import numpy as np
import pytest
from test_report import _agnostic, _record

from results.figure_labels import text_extent
from results.figure_style import STYLES, strategy_style
from results.figures import all_figures

CLASSES = [2, 4]  # chance with task ids 50% and 25%; without: 1/2, then 1/6
A = [[0.9, None], [0.8, 0.7]]
B = [[0.7, None], [0.6, 0.9]]


def _records():
    """Two backbones, three strategies, two seeds, evaluated with and without task ids; l2p's
    task inference sends every sample to task 2."""
    recs = []
    for backbone, seed in itertools.product(("vit", "lavit"), (0, 1)):
        for name, matrix, total in (("meat", A, 0.9), ("classifier", B, 0.6), ("l2p", B, 0.7)):
            rec = _record(name, seed, matrix, total_mib=total, classes=CLASSES,
                          backbone=backbone, stream="mnist5k-split2")
            rec["tasks"][0]["name"] = "mnist5k 0/1"  # a split stream's name: classes 0 and 1
            rec["storage"]["shared_mib"] = 0.05 if name == "l2p" else 0.0
            inferred = ([[1.0, None], [0.0, 1.0]] if name == "l2p"
                        else [[1.0, None], [0.6, 0.7]])
            recs.append(_agnostic(rec, [[0.8, None], [0.3, 0.4]], inferred))
    return recs


@pytest.fixture
def figures(tmp_path, monkeypatch):
    """{name: figure} of every figure of the report of :func:`_records`, kept open."""
    monkeypatch.setattr(plt, "close", lambda fig=None: None)
    plt.close("all")
    all_figures(_records(), {}, tmp_path)
    figs = {plt.figure(n).get_label(): plt.figure(n) for n in plt.get_fignums()}
    yield figs
    for fig in figs.values():
        fig.clf()
    monkeypatch.undo()
    plt.close("all")


def _chance(ax) -> list[float]:
    return sorted(round(float(line.get_ydata()[0]), 4) for line in ax.get_lines()
                  if line.get_gid() == "chance")


def test_every_accuracy_figure_draws_its_chance_level(figures):
    assert set(figures) == {
        f"{kind}_mnist5k-split2_{b}" for kind in ("heatmap", "heatmap_class_incremental",
                                                  "task_curves") for b in ("vit", "lavit")
    } | {"tradeoff_mnist5k-split2", "train_time_mnist5k-split2",
         "task_agnostic_mnist5k-split2"}
    for b in ("vit", "lavit"):
        colorbar = figures[f"heatmap_mnist5k-split2_{b}"].axes[-1]
        assert _chance(colorbar) == [25.0, 50.0]  # 1/classes of task j
        colorbar = figures[f"heatmap_class_incremental_mnist5k-split2_{b}"].axes[-1]
        assert _chance(colorbar) == [round(100 / 6, 4), 50.0]  # 1/classes seen through task i
        panels = figures[f"task_curves_mnist5k-split2_{b}"].axes
        assert [_chance(ax) for ax in panels] == [[50.0], [25.0]]
    for ax in figures["tradeoff_mnist5k-split2"].axes:
        assert _chance(ax) == [37.5]  # the final average's: (1/2 + 1/4) / 2
    for ax in figures["task_agnostic_mnist5k-split2"].axes:
        assert _chance(ax) == [round(100 / 6, 4), 37.5, 50.0]  # without, with, task inference


@pytest.mark.slow
def test_every_label_drawn_in_an_axes_lies_inside_it(figures):
    for name, fig in figures.items():
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            box = ax.get_window_extent(renderer).padded(0.5)
            for text in ax.texts:
                ext = text_extent(text, renderer)
                assert (box.x0 <= ext.x0 and ext.x1 <= box.x1 and box.y0 <= ext.y0
                        and ext.y1 <= box.y1), (name, text.get_text())


def test_titles_name_the_protocol_the_classes_and_a_collapsed_task_inference(figures):
    title = figures["heatmap_mnist5k-split2_vit"]._suptitle.get_text()
    assert "with task ids" in title and "1/classes of task j: 50%, 25%" in title
    cil = figures["heatmap_class_incremental_mnist5k-split2_vit"]
    assert "without task ids" in cil._suptitle.get_text()
    panels = {ax.get_title().split("\n")[0]: ax.get_title() for ax in cil.axes[:-1]}
    assert panels["l2p"] == "l2p\nevery sample to task 2 (2 of 2 seeds)"
    assert panels["meat"] == "meat"
    curves = figures["task_curves_mnist5k-split2_vit"]
    assert [ax.get_title() for ax in curves.axes] == ["task 1: classes 0, 1", "task 2: t1"]
    flags = [t.get_text() for ax in figures["task_agnostic_mnist5k-split2"].axes
             for t in ax.texts]
    assert flags == ["every sample to\ntask 2\n(2 of 2 seeds)"] * 2  # l2p, on each backbone


def test_the_tradeoff_plots_added_storage_per_task_with_distinct_markers(figures):
    fig = figures["tradeoff_mnist5k-split2"]
    ax = fig.axes[0]
    assert "base model excluded" in ax.get_xlabel()
    xs = {}
    for line in ax.get_lines():
        if line.get_marker() in {marker for _, marker in STYLES.values()}:
            xs[line.get_marker()] = float(line.get_xdata()[0])
    # per_task_mib: meat (0.9 - 0.5) / 2, classifier (0.6 - 0.5) / 2, l2p (0.7 - 0.5) / 2
    assert xs == pytest.approx({STYLES["meat"][1]: 0.2, STYLES["classifier"][1]: 0.05,
                                STYLES["l2p"][1]: 0.1})
    labels = {t.get_text() for t in ax.texts if t.get_gid() != "chance"}
    assert labels == {"meat", "classifier", "l2p (+0.05 MiB shared)"}


def _lab(color) -> np.ndarray:
    """CIELAB (D65) of a matplotlib color."""
    rgb = np.array(matplotlib.colors.to_rgb(color))
    rgb = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                    [0.0193, 0.1192, 0.9505]]) @ rgb / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_every_registered_strategy_has_its_own_marker_and_a_color_apart():
    from strategies import STRATEGIES

    styles = {s: strategy_style(s) for s in STRATEGIES}
    assert set(STRATEGIES) <= set(STYLES)
    assert len({marker for _, marker in styles.values()}) == len(STRATEGIES)
    for a, b in itertools.combinations(STRATEGIES, 2):
        delta_e = np.linalg.norm(_lab(styles[a][0]) - _lab(styles[b][0]))
        assert delta_e >= 30, (a, b, delta_e)
    assert strategy_style("meat (tau=4.0)") == styles["meat"]
    assert strategy_style("mine") == strategy_style("mine (lr=1)")


def test_the_training_time_figure_warns_when_conditions_differ(tmp_path, monkeypatch):
    monkeypatch.setattr(plt, "close", lambda fig=None: None)
    from results.figure_time import train_time

    recs = [_record(name, 0, A) for name in ("meat", "classifier")]
    for rec, load in zip(recs, (0.1, 3.0), strict=True):
        rec["timing"].update(threads=2, cpus=2, load_start=load, load_end=2.1)
    train_time(recs, tmp_path, "s", "t")
    note = " ".join(t.get_text() for t in plt.gcf().axes[0].texts).replace("\n", " ")
    assert "mix conditions: 2 threads, 2 CPUs (1 run); 2 threads, 2 CPUs, loaded (1 run)" in note
    plt.close("all")
    recs[1]["timing"]["load_start"] = 0.2
    train_time(recs, tmp_path, "s", "t")
    assert not plt.gcf().axes[0].texts  # like with like: nothing to say
    monkeypatch.undo()
    plt.close("all")


def test_the_token_figure_numbers_tasks_and_layers_from_one(tmp_path, monkeypatch):
    import torch

    from results.figure_tokens import layer_label, token_mask_figure
    from results.records import write_token_masks

    assert layer_label("blocks.0") == "block 1" and layer_label("stages.1.0") == "stage 2.1"
    keep = [True, False, True, True]
    write_token_masks(tmp_path, [{"blocks.0": keep, "blocks.1": keep}])
    torch.save({"images": [torch.rand(1, 8, 8)]}, tmp_path / "examples.pt")
    record = {"acc_matrix": [[1.0]], "tasks": [{"name": "mnist5k 2/8", "classes": ["2", "8"]}],
              "config": {"strategy": "meat", "backbone": "b", "stream": "s", "seed": 0}}
    monkeypatch.setattr(plt, "close", lambda fig=None: None)
    assert token_mask_figure(tmp_path, record, tmp_path / "fig", "tokens")
    fig = plt.gcf()
    assert [ax.get_title() for ax in fig.axes[:2]] == ["block 1\nkept 3/4", "block 2\nkept 3/4"]
    assert [t.get_text() for t in fig.axes[2].get_xticklabels()] == ["1", "2"]
    assert "task 1 (classes 2, 8)" in fig._suptitle.get_text()
    monkeypatch.undo()
    plt.close("all")
