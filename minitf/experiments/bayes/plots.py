"""The Bayesian family's pictures, drawn with ``minitf.report`` (no pyplot).

ginc: in-context accuracy against k per example length, with the Bayes reference.
metalearn: the accuracy matrix as a heatmap, accuracy against the number of support examples, and the
training losses (each learner's training on its own axis).
"""
import numpy as np

from minitf.report import heatmap, plot_interval, plot_loss, save_figure, subplots

TITLES = {"in_distribution": "in-distribution concepts", "out_of_distribution": "OOD concepts",
          "control": "control (one pretraining concept)"}


def plot_accuracy(run_dir: str, report: dict) -> str:
    """Write ``run_dir/ginc_accuracy.png``: one panel per concept set of ``report["accuracy"]``,
    a line per example length, accuracy in [0, 1] against k (symlog x axis, so k = 0 shows)
    with 95% intervals; dashed, same colour: the document-Bayes reference on the same prompts;
    dotted: chance. Returns the path."""
    acc = {name: report["accuracy"][name] for name in TITLES if name in report["accuracy"]}  # report.json sorts keys
    fig, axes = subplots(1, len(acc), figsize=(4.2 * len(acc), 3.6), sharey=True)
    refs = report.get("reference", {})
    for ax, (name, by_len) in zip(axes, acc.items()):
        # the document-Bayes reference of the same prompts (the control answers the in-distribution ones)
        ref = refs.get(f"document_{'in_distribution' if name == 'control' else name}", {})
        for i, (n, row) in enumerate(by_len.items()):
            ks = sorted(row, key=int)
            plot_interval(ax, [int(k) for k in ks], [row[k]["acc"] for k in ks], [row[k]["ci95"][0] for k in ks],
                          [row[k]["ci95"][1] for k in ks], color=f"C{i}", label=f"example length {n}")
            if n in ref:
                rk = sorted(ref[n], key=int)
                ax.plot([int(k) for k in rk], [ref[n][k]["acc"] for k in rk], linestyle="--", color=f"C{i}",
                        alpha=0.6, label="document-Bayes reference" if i == 0 else None)
            chance = row[ks[0]]["chance"]
        ax.axhline(chance, linestyle=":", color="grey", label="chance")
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(-0.3, 1.3 * max(int(k) for row in by_len.values() for k in row))
        ax.set_xlabel("k (in-context examples)")
        ax.set_title(TITLES.get(name, name))
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=8)
    return save_figure(fig, run_dir, "ginc_accuracy.png")


STYLES = {"icl": dict(color="black", linewidth=2.2), "matchnet": dict(color="tab:green"),
          "protonet": dict(color="tab:blue"), "cnp": dict(color="tab:orange"),
          "matchnet_wide": dict(color="tab:green", linestyle=":"),
          "protonet_wide": dict(color="tab:blue", linestyle=":"),
          "cnp_wide": dict(color="tab:orange", linestyle=":"), "optimal": dict(color="grey", linestyle="--")}


def plot_matrix(run_dir: str, report: dict, filename: str = "matrix.png") -> str:
    """Heatmap of ``results[train_on][test_on][learner]["acc"]``: one row per (train_on, learner),
    one column per test set, the accuracy written in each cell (colour range 0.5–1; a learner
    not evaluated on a test set: a blank cell)."""
    results, tests = report["results"], report["test_on"]
    rows = [(t, lrn) for t in results for lrn in next(iter(results[t].values()))]
    arr = np.array([[results[t][name].get(lrn, {}).get("acc", np.nan) for name in tests] for t, lrn in rows])
    fig, ax = subplots(figsize=(1.0 * len(tests) + 3, 0.32 * len(rows) + 1.6))
    heatmap(ax, arr, [f"{t} · {lrn}" for t, lrn in rows], tests, vmin=0.5, vmax=1.0, aspect="auto",
            col_rotation=30, annotate="{:.2f}", colorbar_label="accuracy")
    ax.tick_params(axis="x", labelsize=8)
    ax.tick_params(axis="y", labelsize=7)
    for i in range(1, len(rows)):
        if rows[i][0] != rows[i - 1][0]:
            ax.axhline(i - 0.5, color="w", linewidth=2)
    ax.set_xlabel("test set")
    ax.set_ylabel("trained on · learner")
    ax.set_title(f"accuracy (mean over k = 1..{report['n_support']}, {report['eval_tasks']} tasks per test set, "
                 f"d = {report['d']})", fontsize=9)
    return save_figure(fig, run_dir, filename)


def plot_curves(run_dir: str, report: dict, filename: str = "curves.png") -> str:
    """Accuracy against the support size (bins of k), one panel per test family: the learners
    trained on that family (solid) and on the mixture (dotted; the unknown family: mixture only)."""
    curves = report["curves"]
    tests = [t for t in report["test_on"] if not t.endswith("_shift")]
    fig, axes = subplots(1, len(tests), figsize=(4 * len(tests), 3.6), squeeze=False)
    for ax, test in zip(axes[0], tests):
        for train_on, line in ((test, "-"), ("mixture", ":")):
            if train_on not in curves:
                continue
            for lrn, c in curves[train_on][test].items():
                if lrn == "optimal" and train_on == "mixture" and test in curves:
                    continue  # the same numbers as the solid line
                mid = [(lo + hi) / 2 for lo, hi in c["k_range"]]
                style = {**STYLES.get(lrn, {}), "linestyle": STYLES.get(lrn, {}).get("linestyle", line)}
                if lrn != "optimal":
                    style["linestyle"] = line
                ax.plot(mid, c["acc"], marker="o", markersize=3, label=f"{lrn} ({train_on})", **style)
        ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(f"test: {test}", fontsize=9)
        ax.set_xlabel("support examples k (bin centres)")
        ax.set_ylim(0.45, 1.01)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    axes[0][0].set_ylabel("accuracy")
    return save_figure(fig, run_dir, filename)


def plot_losses(run_dir: str, filename: str = "loss.png") -> str:
    """loss.png: every training of the run (one per learner and training family, each a separate
    model) on its own step axis from 0, one panel per family ("trained on …"), the squared error
    on the y axis; replaces the runner's loss.png, which would draw them end to end."""
    return plot_loss(run_dir, filename=filename, panel=lambda phase: "trained on " + phase.rsplit("_", 1)[-1])
