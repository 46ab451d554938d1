"""PNGs for the induction experiment: score trajectories, head heatmaps, attention patterns."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import minitf  # noqa: E402
from minitf.probes import attention_patterns, repeated_random_tokens  # noqa: E402
from minitf.report import read_metrics  # noqa: E402

SCORES = ("previous_token", "prefix_matching", "duplicate_token", "copying")


def plot_induction(run_dir: str, report: dict) -> None:
    """Write the induction PNGs into ``run_dir``: scores.png (``plot_trajectories``),
    head_scores.png (``plot_heatmaps``), attention.png and, with circuitsvis, attention.html
    (``plot_top_patterns``; loads the saved model from ``run_dir``)."""
    plot_trajectories(run_dir, report)
    plot_heatmaps(run_dir, report)
    plot_top_patterns(run_dir, report)


def plot_trajectories(run_dir, report):
    """scores.png: each head's four scores and the first/second-repeat held-out loss (nats/token)
    against training step, read from metrics.jsonl, with the phase-change step (if any) marked;
    writes nothing when no evaluation logged scores."""
    evals = [r for r in read_metrics(run_dir) if "eval" in r and "scores" in r["eval"]]
    if not evals:
        return
    steps = [r["step"] for r in evals]
    fig, axes = plt.subplots(1, len(SCORES) + 1, figsize=(4 * (len(SCORES) + 1), 3.5))
    for ax, name in zip(axes, SCORES):
        arr = np.array([r["eval"]["scores"][name] for r in evals])  # (time, layer, head)
        for layer in range(arr.shape[1]):
            for head in range(arr.shape[2]):
                ax.plot(steps, arr[:, layer, head], label=f"L{layer}H{head}", linestyle="-" if layer else "--")
        ax.set_title(name.replace("_", " ") + " score")
        ax.set_xlabel("training step")
        ax.set_ylabel("Σλ/Σ|λ| of the OV circuit" if name == "copying" else "mean attention probability")
    axes[0].legend(fontsize=6, ncol=2)
    ax = axes[-1]
    ax.plot(steps, [r["eval"]["loss_first_repeat"] for r in evals], label="first repeat")
    ax.plot(steps, [r["eval"]["loss_second_repeat"] for r in evals], label="second repeat")
    ax.set_title("held-out loss")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (nats/token)")
    ax.legend(fontsize=7)
    for a in axes:
        if report.get("phase_change_step"):
            a.axvline(report["phase_change_step"], color="red", linestyle=":")
    fig.tight_layout()
    fig.savefig(os.path.join(run_dir, "scores.png"), dpi=90)
    plt.close(fig)


def plot_heatmaps(run_dir, report):
    """head_scores.png: the report's final scores as (layer, head) heatmaps, one per score
    (colour range [0, 1]; [-1, 1] for copying)."""
    fig, axes = plt.subplots(1, len(SCORES), figsize=(3.2 * len(SCORES), 3))
    for ax, name in zip(axes, SCORES):
        arr = np.array(report["scores"][name])
        im = ax.imshow(arr, vmin=-1 if name == "copying" else 0, vmax=1, cmap="viridis")
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        for (i, j), v in np.ndenumerate(arr):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w")
        fig.colorbar(im, ax=ax, fraction=0.046, label="score")
    fig.tight_layout()
    fig.savefig(os.path.join(run_dir, "head_scores.png"), dpi=90)
    plt.close(fig)


def plot_top_patterns(run_dir, report):
    """attention.png: the patterns of the top prefix-matching (layer ≥ 1) and previous-token heads
    on a repeated random segment, titled by what they are — "induction head" only when its
    prefix-matching score passed 0.5 — and attention.html (circuitsvis, with the lens extra)."""
    scores = report.get("scores", {})
    heads = []
    for kind, key, score_name in (("induction", "top_induction_head", "prefix_matching"),
                                  ("previous-token", "top_previous_token_head", "previous_token")):
        head = report.get(key)
        if head:
            value = scores[score_name][head[0]][head[1]]
            title = (f"{kind} head L{head[0]}H{head[1]} ({score_name.replace('_', '-')} {value:.2f})" if value > 0.5
                     else f"no {kind} head formed: best is L{head[0]}H{head[1]} "
                          f"({score_name.replace('_', '-')} {value:.2f} ≤ 0.5)")
            heads.append((title, head))
    if not heads:
        return
    model, vocab = minitf.load(run_dir)
    symbols = [i for i, t in enumerate(vocab.tokens) if t.startswith("t")]
    segment = min(12, (model.cfg.n_ctx - 1) // 2)
    tokens = repeated_random_tokens(np.random.default_rng(0), symbols, 1, segment, bos_id=vocab.index["<bos>"])
    patterns = attention_patterns(model, tokens)
    fig, axes = plt.subplots(1, len(heads), figsize=(5 * len(heads), 4.4))
    for ax, (title, (layer, head)) in zip(np.atleast_1d(axes), heads):
        im = ax.imshow(patterns[layer, 0, head].numpy(), cmap="Blues", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("key position (token attended to)")
        ax.set_ylabel("query position")
        fig.colorbar(im, ax=ax, fraction=0.046, label="attention probability")
    fig.suptitle(f"a random segment of {segment} tokens, repeated", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(run_dir, "attention.png"), dpi=90)
    plt.close(fig)
    try:  # the interactive view needs the lens extra (circuitsvis); the PNG does not
        from minitf.viz import attention_html

        layer = heads[0][1][0]
        attention_html(model, tokens, layer, vocab, path=os.path.join(run_dir, "attention.html"))
    except ImportError:
        pass
