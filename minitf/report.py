"""Reports: report.json, a printed table, and PNGs.

Figures are drawn with matplotlib's object API: ``subplots`` makes a ``matplotlib.figure.Figure``
with its own Agg canvas, ``save_figure`` writes it. Nothing here calls ``matplotlib.use``, imports
pyplot or touches ``rcParams``, and no minitf module does so when imported: importing minitf
leaves the user's backend alone (a notebook's inline plots keep working), and a PNG is written
with no screen (tests/test_report.py). ``plt`` is a stand-in with pyplot's ``subplots`` / ``close`` for plotting
code written against pyplot; it draws the same way.

The plotting kit every family's ``plots.py`` (and ``minitf.runs``) draws with: ``subplots`` and
``save_figure`` for the figure, ``heatmap`` for a labelled matrix with its colorbar (and the values
written in the cells), ``plot_interval`` for means with their intervals (error bars or a shaded
band; ``interval_yerr`` gives the same error lengths to ``ax.bar``). ``plot_loss`` is the runner's
loss.png. No other minitf module imports matplotlib.
"""
import json
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from minitf.artifacts import CONFIG, METRICS, REPORT
from minitf.fileio import atomic_write_json


def subplots(nrows: int = 1, ncols: int = 1, figsize=None, **kwargs):
    """``(fig, axes)`` like ``pyplot.subplots`` (``kwargs``: sharex, sharey, squeeze, …), but the
    figure is a plain ``Figure`` on an Agg canvas: no backend is chosen, nothing is shown."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kwargs)



def write_report(run_dir: str, report: dict) -> str:
    """Write ``report`` (JSON-serialisable) as ``run_dir/report.json``, atomically; returns its path."""
    path = os.path.join(run_dir, REPORT)
    atomic_write_json(path, report)
    return path


def format_table(header: list[str], rows: list[list], title: str = "") -> str:
    """A plain-text table: an optional title line, the header, a dashed rule, then one line per
    row. The first column is left-aligned, the others right-aligned; floats print with 3
    decimals, None as "-"."""
    cells = [[_fmt(c) for c in row] for row in [header] + rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [title] if title else []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)


def read_metrics(run_dir: str) -> list[dict]:
    """The rows of ``run_dir/metrics.jsonl`` (one dict per non-blank line), in file order; [] when
    the file does not exist."""
    path = os.path.join(run_dir, METRICS)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_loss(run_dir: str, marks: dict[str, int] | None = None, filename: str = "loss.png",
              parents: dict[str, str] | None = None, panel=None) -> str:
    """Training loss per phase against steps since the start of training. Phases follow each
    other, except those in ``parents`` ({phase: parent}), which branch from the end of their
    parent (the headline's phase-2 runs each start from the phase-1 weights). ``marks`` draws
    labelled vertical lines.

    ``panel(phase) -> str``: the phases are separate trainings (e.g. metalearn's learners); each
    is drawn from step 0 on its own step axis, one panel per distinct ``panel(phase)`` (the
    panel's title), one curve per phase. The y label names the loss's unit: nats/token for a
    token model, the mean squared error for a vector model (``d_input > 0`` in config.json)."""
    rows = [r for r in read_metrics(run_dir) if "loss" in r]
    phases = list(dict.fromkeys(r["phase"] for r in rows))
    if panel is not None:
        return _plot_separate_losses(run_dir, rows, phases, panel, filename)
    fig, ax = subplots(figsize=(7.5, 4.2))
    ends, start = {}, 0
    for phase in phases:
        pr = [r for r in rows if r["phase"] == phase]
        begin = ends.get((parents or {}).get(phase), start)
        ax.plot([begin + r["step"] for r in pr], [r["loss"] for r in pr], label=phase,
                marker="o" if len(pr) < 3 else None)  # a phase with one logged step is a dot, not nothing
        ends[phase] = start = begin + max(r["step"] for r in pr)
    for label, step in (marks or {}).items():
        if step is not None:
            ax.axvline(step, color="red", linestyle="--", linewidth=1)
            ax.annotate(label, (step, ax.get_ylim()[1]), color="red", fontsize=8, va="top")
    ax.set_xlabel("training step (phase-2 runs branch from the end of phase 1)" if parents else "training step")
    ax.set_ylabel(loss_label(run_dir))
    ax.set_title(os.path.basename(os.path.normpath(run_dir)), fontsize=9)
    if len(phases) > 1:
        ax.legend(fontsize=8)
    return save_figure(fig, run_dir, filename)


def _plot_separate_losses(run_dir, rows, phases, panel, filename) -> str:
    groups = list(dict.fromkeys(panel(p) for p in phases))
    ncols = min(len(groups), 3)
    nrows = -(-len(groups) // ncols)
    fig, axes = subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows + 0.4), squeeze=False)
    for ax, group in zip(axes.flat, groups):
        for phase in (p for p in phases if panel(p) == group):
            pr = [r for r in rows if r["phase"] == phase]
            ax.plot([r["step"] for r in pr], [r["loss"] for r in pr], label=phase, linewidth=1,
                    marker="o" if len(pr) < 3 else None)
        ax.set_title(group, fontsize=9)
        ax.set_xlabel("training step (each training from 0)", fontsize=8)
        ax.set_ylabel(loss_label(run_dir), fontsize=8)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    fig.suptitle(f"{os.path.basename(os.path.normpath(run_dir))}: {len(phases)} separate trainings", fontsize=9)
    return save_figure(fig, run_dir, filename)


def loss_label(run_dir: str) -> str:
    """The training loss's axis label: cross-entropy in nats/token for a token model, squared
    error for a vector model (``masked_loss``), read from the run's config.json."""
    try:
        with open(os.path.join(run_dir, CONFIG)) as f:
            vector = bool(json.load(f)["model"].get("d_input", 0))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "training loss"
    return "training loss (mean squared error)" if vector else "training loss (nats/token)"


def save_figure(fig, folder: str, filename: str, dpi: int = 100) -> str:
    """Lay out ``fig`` and write it to ``folder/filename``; returns the path."""
    fig.tight_layout()
    path = os.path.join(folder, filename)
    fig.savefig(path, dpi=dpi)
    return path


# --- the plotting kit: every family's plots.py draws its heatmaps and intervals with these ----------

def heatmap(ax, array, row_labels=None, col_labels=None, *, vmin: float, vmax: float, cmap: str = "viridis",
            annotate: str | None = None, colorbar_label: str | None = None, origin: str = "upper",
            aspect: str = "equal", col_rotation: float = 0, fontsize: float = 7):
    """Draw ``array`` on ``ax`` as a heatmap with a colorbar; returns the ``AxesImage``.

    ``array``: shape (rows, cols), any numbers in the colorbar's unit (an accuracy in [0, 1], an
    attention probability, a score); NaN cells are drawn blank and never annotated.
    ``row_labels`` / ``col_labels``: one tick label per row / column (``len == rows`` /
    ``len == cols``), or None for matplotlib's own integer ticks (e.g. 25 token positions).
    ``vmin``, ``vmax``: the colour range, in the array's unit; values outside are clipped to the
    end colours. ``annotate``: a format string such as ``"{:.2f}"`` to write every cell's value in
    it (white on dark cells, black on light ones), None for none. ``colorbar_label``: the
    colorbar's label, which should name the unit. ``origin="lower"`` puts row 0 at the bottom;
    ``aspect="auto"`` lets cells stretch to fill the axes; ``col_rotation`` (degrees) tilts the
    column labels, right-aligned; ``fontsize``: the annotations' size in points.

    Raises ValueError when ``array`` is not 2-D, a label list does not match its dimension, or
    ``vmin >= vmax``."""
    arr = np.asarray(array, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"heatmap: array must be 2-D (rows, cols), got shape {arr.shape}")
    for name, labels, n in (("row_labels", row_labels, arr.shape[0]), ("col_labels", col_labels, arr.shape[1])):
        if labels is not None and len(labels) != n:
            raise ValueError(f"heatmap: {len(labels)} {name} for an array of shape {arr.shape} "
                             f"({'rows' if name == 'row_labels' else 'columns'}: {n})")
    if not vmin < vmax:
        raise ValueError(f"heatmap: vmin ({vmin}) must be below vmax ({vmax})")
    im = ax.imshow(arr, vmin=vmin, vmax=vmax, cmap=cmap, origin=origin, aspect=aspect)
    if row_labels is not None:
        ax.set_yticks(range(arr.shape[0]), [str(label) for label in row_labels])
    if col_labels is not None:
        ax.set_xticks(range(arr.shape[1]), [str(label) for label in col_labels],
                      rotation=col_rotation, ha="right" if col_rotation else "center")
    if annotate:
        for (i, j), v in np.ndenumerate(arr):
            if np.isfinite(v):
                r, g, b, _ = im.cmap(im.norm(v))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # perceived brightness of the cell
                ax.text(j, i, annotate.format(v), ha="center", va="center", fontsize=fontsize,
                        color="w" if dark else "k")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=colorbar_label)
    return im


def interval_yerr(mean, lo, hi) -> np.ndarray:
    """The (2, n) ``yerr`` of matplotlib's ``errorbar`` / ``bar`` for intervals ``[lo, hi]``
    around ``mean`` (three length-n sequences, one unit): ``[mean - lo, hi - mean]``, clipped at
    0 so that rounding (a Wilson interval at 0 or 1) never makes a negative length. Raises
    ValueError when the lengths differ."""
    mean, lo, hi = (np.asarray(v, dtype=float) for v in (mean, lo, hi))
    if mean.ndim != 1 or not mean.shape == lo.shape == hi.shape:
        raise ValueError(f"interval: mean, lo and hi must be 1-D of one length, got shapes "
                         f"{mean.shape}, {lo.shape}, {hi.shape}")
    return np.clip(np.stack([mean - lo, hi - mean]), 0.0, None)


def plot_interval(ax, xs, mean, lo, hi, style: str = "bars", *, capsize: float = 2, alpha: float = 0.15,
                  **line_kwargs):
    """Draw ``mean`` against ``xs`` with each point's interval ``[lo, hi]`` (e.g. a 95% Wilson
    interval of an accuracy, or a bootstrap interval of an error); returns the line (``Line2D``).

    ``xs``, ``mean``, ``lo``, ``hi``: length-n sequences; ``mean``, ``lo`` and ``hi`` share the y
    axis' unit. ``style="bars"``: error bars (caps ``capsize`` points wide), for a few separate
    points; ``style="band"``: a band shaded at ``alpha`` in the line's colour, for a dense
    curve. ``line_kwargs`` (``label``, ``color``, ``linestyle``, ``linewidth``, ``marker`` –
    default ``"o"`` –, ``markersize``, …) style the line. Raises ValueError for an unknown
    ``style`` or sequences of different lengths."""
    if style not in ("bars", "band"):
        raise ValueError(f"plot_interval: style must be 'bars' or 'band', got {style!r}")
    yerr = interval_yerr(mean, lo, hi)
    if len(xs) != yerr.shape[1]:
        raise ValueError(f"plot_interval: {len(xs)} xs for {yerr.shape[1]} means")
    line_kwargs.setdefault("marker", "o")
    if style == "bars":
        return ax.errorbar(xs, mean, yerr=yerr, capsize=capsize, **line_kwargs).lines[0]
    line, = ax.plot(xs, mean, **line_kwargs)
    ax.fill_between(xs, lo, hi, alpha=alpha, color=line.get_color(), linewidth=0)
    return line
