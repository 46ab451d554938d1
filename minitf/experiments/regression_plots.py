"""The regression experiment's pictures: error/d curves over k, and the learning curve."""
import os

from minitf.report import plt, save_figure

STYLES = {"model": dict(color="black", linewidth=2.2), "least_squares": dict(color="tab:blue"),
          "ridge": dict(color="tab:cyan", linestyle=":"), "knn": dict(color="tab:green"),
          "averaging": dict(color="tab:orange"), "gd_one_step": dict(color="tab:red"),
          "lasso": dict(color="tab:purple"), "dmmse": dict(color="tab:brown")}


def plot_curves(run_dir: str, report: dict, filename: str = "curves.png") -> str:
    """error/d (squared error / d) against k in-context examples, 95% intervals shaded."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in report["curves"].items():
        ks = sorted(int(k) for k in curve)
        err = [curve[k]["err"] if k in curve else curve[str(k)]["err"] for k in ks]
        ci = [curve[k]["ci95"] if k in curve else curve[str(k)]["ci95"] for k in ks]
        style = STYLES.get(name, {})
        ax.plot(ks, err, label=name, marker="o", markersize=3, **style)
        ax.fill_between(ks, [c[0] for c in ci], [c[1] for c in ci], alpha=0.15, color=style.get("color"))
    ax.axvline(report["d"], color="grey", linestyle="--", linewidth=1)
    ax.annotate("k = d", (report["d"], 1.05), color="grey", fontsize=8)
    ax.set_xlabel("k = in-context examples before the query")
    ax.set_ylabel("squared error / d  (1 = predicting 0)")
    ax.set_ylim(0, 1.25)
    ax.set_title(f"in-context regression, d={report['d']}, {report['eval_prompts']} fresh prompts "
                 f"(curriculum={report['curriculum']})", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, run_dir, filename)


def plot_learning(run_dir: str, report: dict, filename: str = "learning.png", others: dict | None = None) -> str:
    """error/d at the last k against the training step (``others``: more ``{label: [(step, err)]}``)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    series = {f"curriculum={report['curriculum']}": report["learning_curve"], **(others or {})}
    for label, rows in series.items():
        ax.plot([s for s, _ in rows], [e for _, e in rows], marker="o", markersize=3, label=label)
    ax.axhline(report["threshold"], color="grey", linestyle="--", linewidth=1, label=f"threshold {report['threshold']}")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"squared error / d at k = {report['n_points'] - 1}")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    return save_figure(fig, run_dir, filename)


def compare_learning(run_dirs: list[str], out: str) -> str:
    """One picture of several regression runs' learning curves (e.g. ``curriculum=none`` vs
    ``dims``, same seeds and steps), labelled by seed and curriculum; written to ``out``."""
    import json

    reports = []
    for run_dir in run_dirs:
        with open(os.path.join(run_dir, "report.json")) as f:
            reports.append(json.load(f))
    first = reports[0]
    others = {f"curriculum={r['curriculum']} (seed {r['seed']})": r["learning_curve"] for r in reports[1:]}
    first = {**first, "curriculum": f"{first['curriculum']} (seed {first['seed']})"}
    return plot_learning(os.path.dirname(out) or ".", first, os.path.basename(out), others)
