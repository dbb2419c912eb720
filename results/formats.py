"""A table as it is written: GitHub Markdown, LaTeX and CSV files (floats rounded), console text
that fits :data:`WIDTH` characters, and file-name-safe names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from atomicio import atomic_write_text


def safe_name(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def to_markdown(df: pd.DataFrame, index: bool = True, digits: int = 1) -> str:
    """A GitHub Markdown table (floats with ``digits`` decimals, NaN as --)."""
    def cell(v):
        if isinstance(v, float):
            return "--" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    frame = df.reset_index() if index else df
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


CSV_DECIMALS = 6  # a 10^-6 fraction of a test set, or a byte in MiB


def to_csv(df: pd.DataFrame, index: bool = True) -> str:
    """``df`` as CSV, floats rounded to :data:`CSV_DECIMALS` decimals (no ``54.50000000000001``;
    -0.0 written as 0.0)."""
    floats = df.select_dtypes("float").columns
    return df.assign(**{c: df[c].round(CSV_DECIMALS) + 0.0 for c in floats}).to_csv(index=index)


def write_frame(df: pd.DataFrame, out: Path, name: str, index: bool = True,
                csv_df: pd.DataFrame | None = None, note: str | None = None) -> list[Path]:
    """``df`` as ``name.md``, ``name.tex`` and ``name.csv`` (``csv_df`` if given), atomically;
    each line of ``note`` as a paragraph above the Markdown table and a comment above the LaTeX
    one. LaTeX special characters in headers and cells (``%``, ``_``, ``&``, ...) are
    escaped."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.md", out / f"{name}.tex", out / f"{name}.csv"]
    lines = note.splitlines() if note else []
    atomic_write_text(paths[0], "".join(f"{line}\n\n" for line in lines)
                      + to_markdown(df, index=index) + "\n")
    atomic_write_text(paths[1], "".join(f"% {line}\n" for line in lines)
                      + df.to_latex(index=index, float_format="%.1f", na_rep="--", escape=True))
    atomic_write_text(paths[2], to_csv(df if csv_df is None else csv_df, index=index))
    return paths


WIDTH = 100  # console tables wrap their columns to fit this many characters


def as_text(df: pd.DataFrame, **kwargs) -> str:
    """``df.to_string`` in blocks of columns that fit :data:`WIDTH` characters (pandas repeats
    the row labels in every block and ends a continued line with a backslash)."""
    return df.to_string(line_width=WIDTH - 2, **kwargs)
