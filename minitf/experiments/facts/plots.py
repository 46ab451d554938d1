"""The facts family's pictures (headline, recall, semantic), drawn with ``minitf.report``.

``plot_condition_bars`` is the family's one chart: grouped accuracy bars per condition and split with
95% intervals and chance; the headline draws it once (``results.png``), semantic once per world, and
the recall's REINFORCE phase has its own curves (``recall_rl.png``).
"""
import numpy as np

from minitf.report import interval_yerr, save_figure, subplots


def plot_condition_bars(ax, results: dict, conditions, splits, title: str = "") -> None:
    """Grouped bars of ``results[condition][split]`` records with 95% intervals; dotted: chance."""
    width = 0.8 / len(conditions)
    for i, cond in enumerate(conditions):
        vals = [results[cond].get(s, {}).get("acc", 0.0) for s in splits]
        cis = [results[cond].get(s, {}).get("ci95", [v, v]) for v, s in zip(vals, splits)]
        errs = interval_yerr(vals, [lo for lo, _ in cis], [hi for _, hi in cis])
        ax.bar([j + i * width for j in range(len(splits))], vals, width, yerr=errs, label=cond, capsize=2)
    for j, s in enumerate(splits):
        chance = next(results[c][s]["chance"] for c in conditions if s in results[c])
        ax.hlines(chance, j - width / 2, j + 0.8 - width / 2, colors="k", linestyles="dotted")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(splits))], splits, rotation=20)
    ax.set_ylabel("accuracy (bars: 95% Wilson intervals; dotted: chance)", fontsize=8)
    notes = [note for suffix, note in (("_top1", "_top1: argmax over every candidate word"),
                                       ("_direction", "_direction: p(answer | r⁻¹) > p(answer | r)"))
             if any(s.endswith(suffix) for s in splits)]
    ax.set_xlabel(f"split ({'; '.join(notes)})" if notes else "split", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=3)


def plot_results(run_dir: str, report: dict, conditions) -> str:
    """Write ``run_dir/results.png``: accuracy bars per condition for every reported split except
    the forward ones, ``conditions`` in that order; returns its path."""
    results = report["results"]
    splits = [s for s in results["in_weights"] if not s.startswith("forward")]
    fig, ax = subplots(figsize=(max(8, 1.3 * len(splits) * 1.5), 4.5))
    plot_condition_bars(ax, results, [c for c in conditions if c in results], splits, report["architecture"])
    return save_figure(fig, run_dir, "results.png")


def plot_worlds(run_dir: str, report: dict, worlds, conditions, splits) -> str:
    """Write ``run_dir/results.png`` for ``semantic``: k-way accuracy bars per condition and split,
    one panel per world; returns its path."""
    fig, axes = subplots(1, len(worlds), figsize=(7 * len(worlds), 4.8), sharey=True)
    for ax, name in zip(axes, worlds):
        plot_condition_bars(ax, report["results"][name], conditions, splits, f"{name} world (k-way)")
    fig.suptitle(report["architecture"], fontsize=9)
    return save_figure(fig, run_dir, "results.png")


def plot_rl(run_dir: str, report: dict) -> str:
    """Write ``run_dir/recall_rl.png``: REINFORCE's reward (sampled; greedy on held-out queries),
    recall length (tokens) and the fraction of recalled sentences that are true, over steps."""
    log = report["recall_rl_log"]
    rows = [r for r in log if "reward" in r]
    held = [r for r in log if "heldout_reward" in r]
    fig, axes = subplots(1, 3, figsize=(13, 3.6))
    series = [("reward", "reward (answer top-1)"), ("recall_tokens", "recall length (tokens)"),
              ("true_fraction", "recalled sentences that are true")]
    for ax, (key, label) in zip(axes, series):
        steps, vals = [r["step"] for r in rows], [r[key] for r in rows]
        k = max(1, len(vals) // 15)
        smooth = np.convolve(vals, np.ones(k) / k, mode="valid") if vals else []
        ax.plot(steps, vals, alpha=0.3, label="per step (sampled)")
        ax.plot(steps[k - 1:], smooth, label=f"mean of {k}")
        if key == "reward":
            ax.plot([r["step"] for r in held], [r["heldout_reward"] for r in held], "o-", label="held-out (greedy)")
        ax.set_xlabel("REINFORCE step")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    return save_figure(fig, run_dir, "recall_rl.png")
