"""minitf.report: figures never touch the user's matplotlib backend; loss.png names its unit and
draws separate trainings on their own step axes; the plotting kit's heatmap and interval helpers
check their inputs and draw what they are given."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from minitf import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

IMPORT_ALL = """
import importlib, json, pkgutil, sys
import matplotlib
backend = {backend!r}
if backend:
    matplotlib.use(backend)
raw = lambda: {{k: repr(v) for k, v in dict.items(matplotlib.rcParams)}}  # no backend resolution
before = raw()
import minitf
names = [m.name for m in pkgutil.walk_packages(minitf.__path__, "minitf.")]
for name in names:
    importlib.import_module(name)
after = raw()
print(json.dumps({{"changed": sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)),
                  "pyplot": "matplotlib.pyplot" in sys.modules, "n": len(names),
                  "backend": matplotlib.get_backend() if backend else None}}))
"""


@pytest.mark.parametrize("backend", ["svg", "module://matplotlib_inline.backend_inline", None])
def test_importing_every_minitf_module_leaves_the_backend_and_rcparams_alone(backend):
    """A notebook's backend (inline), a chosen one (svg, pdf) or matplotlib's own default: the same
    after ``import minitf`` and every submodule; pyplot is never imported."""
    if backend and backend.startswith("module://"):
        pytest.importorskip("matplotlib_inline")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL.format(backend=backend)], capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["changed"] == [] and not result["pyplot"] and result["n"] > 30
    if backend:
        assert result["backend"] == backend


HEADLESS_PLOTS = """
import json, sys
import matplotlib
from minitf.experiments.facts.plots import plot_condition_bars
from minitf.report import heatmap, plot_interval, plot_loss, save_figure, subplots
run = sys.argv[1]
plot_loss(run)
fig, ax = subplots()
plot_condition_bars(ax, {"a": {"s": {"acc": 0.5, "ci95": [0.4, 0.6], "chance": 0.25}}}, ["a"], ["s"], "t")
save_figure(fig, run, "bars.png")
fig, (a, b) = subplots(1, 2)
heatmap(a, [[0.1, 0.9]], ["r"], ["c0", "c1"], vmin=0, vmax=1, annotate="{:.1f}", colorbar_label="accuracy")
plot_interval(b, [0, 1], [0.5, 0.6], [0.4, 0.5], [0.6, 0.7], style="band")
save_figure(fig, run, "kit.png")
print(dict.__getitem__(matplotlib.rcParams, "backend"))
"""


@pytest.mark.parametrize("mplbackend", ["TkAgg", "QtAgg", ""])
def test_figures_are_written_with_no_screen_whatever_backend_the_user_set(tmp_path, mplbackend):
    """No display, and an interactive backend that cannot open one: the PNGs are still written (Agg
    canvas per figure) and the user's backend setting is left as it was."""
    _metrics(tmp_path, {"train": [1.0, 0.5, 0.2]})
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    if mplbackend:
        env["MPLBACKEND"] = mplbackend
    out = subprocess.run([sys.executable, "-c", HEADLESS_PLOTS, str(tmp_path)], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    for name in ("loss.png", "bars.png", "kit.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if mplbackend:
        assert out.stdout.strip().splitlines()[-1].lower() == mplbackend.lower()


def _metrics(run, losses: dict, d_input=None):
    rows = [{"phase": phase, "step": 10 * (i + 1), "loss": v} for phase, vs in losses.items() for i, v in enumerate(vs)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if d_input is not None:
        (run / "config.json").write_text(json.dumps({"experiment": "x", "model": {"d_input": d_input}}))


def _captured(monkeypatch):
    figures = []
    real = report.save_figure
    monkeypatch.setattr(report, "save_figure", lambda fig, *a, **kw: figures.append(fig) or real(fig, *a, **kw))
    return figures


@pytest.mark.parametrize("d_input,label", [(0, "training loss (nats/token)"), (3, "training loss (mean squared error)"),
                                           (12, "training loss (mean squared error)"), (None, "training loss")])
def test_the_loss_axis_names_its_unit(tmp_path, monkeypatch, d_input, label):
    """A token model's cross-entropy is nats/token; a vector model's (regression, icl_gd, metalearn)
    loss is a squared error; a folder without a readable config.json claims no unit."""
    _metrics(tmp_path, {"train": [1.0, 0.5]}, d_input)
    figures = _captured(monkeypatch)
    report.plot_loss(str(tmp_path))
    assert [ax.get_ylabel() for ax in figures[0].axes] == [label]


def test_separate_trainings_each_start_at_step_zero_in_their_own_panel(tmp_path, monkeypatch):
    _metrics(tmp_path, {"icl_pairwise": [1.0, 0.8, 0.5], "cnp_pairwise": [0.9, 0.7],
                        "icl_mixture": [1.1, 0.6, 0.4, 0.3], "matchnet_wide_mixture": [0.5]}, d_input=7)
    figures = _captured(monkeypatch)
    report.plot_loss(str(tmp_path), panel=lambda phase: "trained on " + phase.rsplit("_", 1)[-1])
    axes = [ax for ax in figures[0].axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["trained on pairwise", "trained on mixture"]
    lines = {line.get_label(): list(line.get_xdata()) for ax in axes for line in ax.get_lines()}
    assert lines == {"icl_pairwise": [10, 20, 30], "cnp_pairwise": [10, 20], "icl_mixture": [10, 20, 30, 40],
                     "matchnet_wide_mixture": [10]}  # each on its own axis, none after another
    assert all(ax.get_ylabel() == "training loss (mean squared error)" for ax in axes)


def test_phases_of_one_training_still_follow_each_other(tmp_path, monkeypatch):
    _metrics(tmp_path, {"phase1": [1.0, 0.5], "phase2": [0.4, 0.3], "branch": [0.35]}, d_input=0)
    figures = _captured(monkeypatch)
    report.plot_loss(str(tmp_path), parents={"branch": "phase1"})
    lines = {line.get_label(): list(line.get_xdata()) for line in figures[0].axes[0].get_lines()}
    assert lines == {"phase1": [10, 20], "phase2": [30, 40], "branch": [30]}


PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("array,rows,cols,match", [
    (np.zeros((2, 3)), ["a", "b", "c"], ["x", "y", "z"], r"3 row_labels for an array of shape \(2, 3\) \(rows: 2\)"),
    (np.zeros((2, 3)), ["a", "b"], ["x", "y"], r"2 col_labels for an array of shape \(2, 3\) \(columns: 3\)"),
    (np.zeros((2, 3)).T, ["a", "b"], ["x", "y", "z"], r"3 row_labels|2 row_labels"),  # transposed by mistake
    (np.zeros(3), None, ["x", "y", "z"], r"must be 2-D \(rows, cols\), got shape \(3,\)"),
    (np.zeros((1, 2, 2)), None, None, r"must be 2-D"),
])
def test_heatmap_refuses_an_array_whose_shape_does_not_match_its_labels(array, rows, cols, match):
    _, ax = report.subplots()
    with pytest.raises(ValueError, match=match):
        report.heatmap(ax, array, rows, cols, vmin=0, vmax=1)
    with pytest.raises(ValueError, match=r"vmin \(1\) must be below vmax \(1\)"):
        report.heatmap(ax, np.zeros((1, 1)), vmin=1, vmax=1)


def test_heatmap_draws_labels_values_and_a_labelled_colorbar(tmp_path):
    """Tick labels are the given labels, every finite cell's value is written (white on dark, black
    on light), a NaN cell is blank, and the colorbar carries the unit."""
    arr = np.array([[0.0, 0.25, np.nan], [0.5, 0.75, 1.0]])
    fig, ax = report.subplots()
    im = report.heatmap(ax, arr, ["layer 0", "layer 1"], ["h0", "h1", "h2"], vmin=0, vmax=1,
                        annotate="{:.2f}", colorbar_label="accuracy")
    assert np.array_equal(im.get_array().filled(np.nan), arr, equal_nan=True)
    assert im.get_clim() == (0, 1)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["layer 0", "layer 1"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["h0", "h1", "h2"]
    texts = {t.get_position(): (t.get_text(), t.get_color()) for t in ax.texts}
    assert texts == {(0, 0): ("0.00", "w"), (1, 0): ("0.25", "w"), (0, 1): ("0.50", "w"), (1, 1): ("0.75", "k"),
                     (2, 1): ("1.00", "k")}  # viridis: dark purple to light yellow; (2, 0) is NaN
    assert im.colorbar.ax.get_ylabel() == "accuracy"
    report.save_figure(fig, str(tmp_path), "heatmap.png")
    assert (tmp_path / "heatmap.png").read_bytes()[:8] == PNG


def test_plot_interval_draws_error_bars_or_a_band_from_lo_to_hi(tmp_path):
    xs, mean, lo, hi = [0, 1, 2], [0.5, 0.6, 1.0], [0.3, 0.5, 1.0 + 1e-17], [0.7, 0.9, 1.0]
    fig, (a, b) = report.subplots(1, 2)
    line = report.plot_interval(a, xs, mean, lo, hi, color="C3", label="acc")
    assert list(line.get_ydata()) == mean and line.get_marker() == "o" and a.get_legend_handles_labels()[1] == ["acc"]
    bars = a.containers[0].lines[2][0].get_segments()  # one vertical segment per point, lo to hi
    assert np.allclose([(s[0][1], s[1][1]) for s in bars], [(0.3, 0.7), (0.5, 0.9), (1.0, 1.0)])
    band_line = report.plot_interval(b, xs, mean, lo, hi, style="band", label="err", linestyle=":")
    assert band_line.get_linestyle() == ":" and b.get_legend_handles_labels()[1] == ["err"]
    band, = b.collections
    ys = band.get_paths()[0].vertices[:, 1]
    assert min(ys) == pytest.approx(0.3) and max(ys) == pytest.approx(1.0)
    assert np.allclose(band.get_facecolor()[0][:3], matplotlib_rgb(band_line.get_color()))
    report.save_figure(fig, str(tmp_path), "interval.png")
    assert (tmp_path / "interval.png").read_bytes()[:8] == PNG
    assert report.interval_yerr(mean, lo, hi).min() == 0.0  # rounding never makes a negative length
    with pytest.raises(ValueError, match="style must be 'bars' or 'band'"):
        report.plot_interval(a, xs, mean, lo, hi, style="area")
    with pytest.raises(ValueError, match="one length"):
        report.plot_interval(a, xs, mean, lo[:2], hi)
    with pytest.raises(ValueError, match="2 xs for 3 means"):
        report.plot_interval(a, xs[:2], mean, lo, hi)


def matplotlib_rgb(color):
    from matplotlib.colors import to_rgb

    return to_rgb(color)


def test_every_summary_states_checks_one_way():
    """``format_checks``: the one printer of a report's targets, for both shapes experiments write."""
    from minitf.experiments.base import format_checks, verdict

    assert format_checks({"pass": {"a": True, "b": False}, "gain": 0.3}) == "targets: a PASS, b MISS"
    assert format_checks({"x >= 0.1": False}, label="label targets") == "label targets: x >= 0.1 MISS"
    assert (verdict(True), verdict(False)) == ("PASS", "MISS")
