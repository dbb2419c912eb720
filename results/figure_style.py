"""How every figure looks: one color and marker per strategy, the chance line, and the saved
files (PNG and PDF). Selects matplotlib's Agg backend: every module that draws imports this one,
so figures are drawn without a display."""

from __future__ import annotations

import hashlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# (color, marker) of the suite's strategies: no two share a marker, and no two colors are closer
# than 30 in CIELAB (Delta E 1976; tests/test_figures.py)
STYLES = {"meat": ("tab:red", "o"), "piggyback": ("tab:blue", "s"), "hat": ("tab:orange", "D"),
          "adapter": ("tab:green", "^"), "lwf": ("tab:purple", "v"),
          "finetune": ("saddlebrown", "<"), "individual": ("deeppink", ">"),
          "classifier": ("tab:gray", "P"), "supsup": ("tab:olive", "p"),
          "lora": ("tab:cyan", "h"), "vpt": ("black", "X"), "l2p": ("navy", "d"),
          "dualprompt": ("magenta", "8"), "coda-prompt": ("darkgoldenrod", "*")}
PALETTE = ("blue", "palevioletred", "darkolivegreen", "blueviolet", "darksalmon", "darkmagenta")
OTHER_MARKERS = ("H", "o", "s", "D")  # other strategies: palette color and marker by name hash
CHANCE = {"color": "black", "ls": ":", "lw": 1.2, "gid": "chance"}  # a chance line's style


def strategy_style(label: str) -> tuple[str, str]:
    """The strategy's (color, marker) in every figure (fixed for the suite's strategies; others
    by a stable hash); ``label`` may carry settings after the name ("meat (tau=4.0)")."""
    name = label.split(" (")[0]
    if name in STYLES:
        return STYLES[name]
    h = int(hashlib.md5(name.encode()).hexdigest(), 16)
    return PALETTE[h % len(PALETTE)], OTHER_MARKERS[h // len(PALETTE) % len(OTHER_MARKERS)]


def strategy_color(label: str):
    """The strategy's color (:func:`strategy_style`)."""
    return strategy_style(label)[0]


def chance_line(ax, value: float, text: str) -> None:
    """A horizontal chance line at ``value`` (%), named just above it at the axes' right end."""
    ax.axhline(value, **CHANCE)
    ax.text(0.99, value, f"{text}: {value:.1f}%", transform=ax.get_yaxis_transform(),
            ha="right", va="bottom", fontsize=7, gid="chance")


def save(fig, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    fig.set_label(name)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=130, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths
