"""Reports: report.json, a printed table, and PNGs.

Figures are drawn with matplotlib's object API: ``subplots`` makes a ``matplotlib.figure.Figure``
with its own Agg canvas, ``save_figure`` writes it. Nothing here calls ``matplotlib.use``, imports
pyplot or touches ``rcParams``, and no minitf module does so when imported: importing minitf
leaves the user's backend alone (a notebook's inline plots keep working), and a PNG is written
with no screen (tests/test_report.py). ``plt`` is a stand-in with pyplot's ``subplots`` / ``close`` for plotting
code written against pyplot; it draws the same way.
"""
import json
import os
from types import SimpleNamespace

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


plt = SimpleNamespace(subplots=subplots, close=lambda fig=None: None)


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
