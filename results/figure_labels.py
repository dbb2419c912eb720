"""Text drawn inside an axes stays inside it and off the other labels and points: a text is
moved in by the least that fits (:func:`keep_inside`); a data point is named at the nearest free
spot beside it (:func:`label_points`)."""

from __future__ import annotations

import matplotlib.text
import matplotlib.transforms


def to_axes(ax, x: float, y: float) -> tuple[float, float]:
    """Data point -> axes fraction (with the axes' scales), after autoscaling."""
    ax.autoscale_view()
    return tuple((ax.transScale + ax.transLimits).transform((x, y)))


def text_extent(t, renderer):
    """The drawn extent of a text alone (an annotation's without its arrow)."""
    if isinstance(t, matplotlib.text.Annotation):
        t.update_positions(renderer)
    return matplotlib.text.Text.get_window_extent(t, renderer)


def keep_inside(ax, texts, pad: float = 2.0) -> None:
    """Move each text (positioned in axes fraction) by the least that brings its drawn extent
    ``pad`` pixels inside the axes (the layout is drawn first, so the extents are final)."""
    fig = ax.figure
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    for t in texts:
        ext = text_extent(t, renderer)
        dx = max(0.0, box.x0 + pad - ext.x0) - max(0.0, ext.x1 - box.x1 + pad)
        dy = max(0.0, box.y0 + pad - ext.y0) - max(0.0, ext.y1 - box.y1 + pad)
        x, y = t.get_position()
        t.set_position((x + dx / box.width, y + dy / box.height))


# where a point's label may go, in points from the point, nearest first: beside it (right or
# left), then further above or below, then further out
LABEL_SPOTS = [(dx, dy) for reach in (10, 40, 80) for dy in
               (0, 9, -9, 18, -18, 27, -27, 36, -36, 54, -54, 72, -72, 96, -96)
               for dx in (reach, -reach)]
POINT_PX = 6.0  # half the side of the box a point's marker (and error bar) keeps free


def label_points(ax, points: list[tuple[float, float, str, str]]) -> None:
    """Name each (x, y, text, color) data point beside it, at the first of :data:`LABEL_SPOTS`
    where the label lies inside the axes and covers no other label or point (failing that,
    where it covers the least), tied to its point by a thin line."""
    fig = ax.figure
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    scale = fig.dpi / 72  # pixels per point
    centres = ax.transData.transform([(x, y) for x, y, _, _ in points])
    taken = [matplotlib.transforms.Bbox.from_extents(cx - POINT_PX, cy - POINT_PX,
                                                     cx + POINT_PX, cy + POINT_PX)
             for cx, cy in centres]

    def cost(ext):
        outside = (max(0, box.x0 - ext.x0) + max(0, ext.x1 - box.x1)
                   + max(0, box.y0 - ext.y0) + max(0, ext.y1 - box.y1))
        overlap = sum(max(0, min(ext.x1, b.x1) - max(ext.x0, b.x0))
                      * max(0, min(ext.y1, b.y1) - max(ext.y0, b.y0)) for b in taken)
        return 1e6 * outside + overlap

    for x, y, text, color in sorted(points):  # left to right
        label = ax.annotate(text, xy=(x, y), xytext=(0, 0), textcoords="offset points", fontsize=7,
                            color=color, va="center",
                            arrowprops={"arrowstyle": "-", "lw": 0.5, "color": color,
                                        "alpha": 0.6, "shrinkA": 1, "shrinkB": POINT_PX / 2})
        best = None
        for dx, dy in LABEL_SPOTS:
            label.set_position((dx, dy))
            label.set_horizontalalignment("left" if dx > 0 else "right")
            ext = text_extent(label, renderer)
            c = cost(ext)
            if best is None or c < best[0]:
                best = (c, dx, dy, ext)
            if c == 0:
                break
        _, dx, dy, ext = best
        label.set_position((dx, dy))
        label.set_horizontalalignment("left" if dx > 0 else "right")
        taken.append(ext.padded(1.5 * scale))
