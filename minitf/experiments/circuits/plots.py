"""The circuits family's pictures, all drawn with ``minitf.report`` (no pyplot, the user's backend
untouched).

induction: score trajectories, head heatmaps, scores per position, attention patterns.
bursty: the ICL/IWL phase diagram of a sweep and the flipped-label follow rate.
"""
import os

import numpy as np

from minitf.checkpoint import load
from minitf.probes import THRESHOLD, attention_patterns, repeated_random_tokens
from minitf.report import heatmap, read_metrics, save_figure, subplots

SCORES = ("previous_token", "prefix_matching", "duplicate_token", "copying")


def plot_induction(run_dir: str, report: dict) -> None:
    """Write the induction PNGs into ``run_dir``: scores.png (``plot_trajectories``),
    head_scores.png (``plot_heatmaps``), position_scores.png (``plot_position_scores``),
    attention.png and, with circuitsvis, attention.html (``plot_top_patterns``; loads the saved
    model from ``run_dir``)."""
    plot_trajectories(run_dir, report)
    plot_heatmaps(run_dir, report)
    plot_position_scores(run_dir, report)
    plot_top_patterns(run_dir, report)


def plot_trajectories(run_dir, report):
    """scores.png: each head's four scores and the first/second-repeat held-out loss (nats/token)
    against training step, read from metrics.jsonl, with the phase-change step (if any) marked;
    writes nothing when no evaluation logged scores."""
    evals = [r for r in read_metrics(run_dir) if "eval" in r and "scores" in r["eval"]]
    if not evals:
        return
    steps = [r["step"] for r in evals]
    fig, axes = subplots(1, len(SCORES) + 1, figsize=(4 * (len(SCORES) + 1), 3.5))
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
    save_figure(fig, run_dir, "scores.png", dpi=90)


def plot_heatmaps(run_dir, report):
    """head_scores.png: the report's final scores as (layer, head) heatmaps, one per score
    (colour range [0, 1] of mean attention probability; [-1, 1] of Σλ/Σ|λ| for copying), each
    cell's value written in it."""
    fig, axes = subplots(1, len(SCORES), figsize=(3.2 * len(SCORES), 3))
    for ax, name in zip(axes, SCORES):
        arr = np.array(report["scores"][name])  # (layer, head)
        copying = name == "copying"
        heatmap(ax, arr, range(arr.shape[0]), range(arr.shape[1]), vmin=-1 if copying else 0, vmax=1,
                annotate="{:.2f}",
                colorbar_label="Σλ/Σ|λ| of the OV circuit" if copying else "mean attention probability")
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
    save_figure(fig, run_dir, "head_scores.png", dpi=90)


def plot_position_scores(run_dir, report):
    """position_scores.png: each head's previous-token, prefix-matching and duplicate-token score
    at every query position of the probes (the report's ``score_curves``), layer 0 dashed, with
    the 0.5 line, each formed head's ``position_range`` in the legend, and the positions training
    never covered shaded; writes nothing for a report without ``score_curves``."""
    curves = report.get("score_curves")
    if not curves:
        return
    trained_last = report.get("trained_positions", [0, None])[1]
    fig, axes = subplots(1, len(curves), figsize=(5.2 * len(curves), 3.8), squeeze=False)
    for ax, (name, c) in zip(axes[0], curves.items()):
        for layer, heads in enumerate(c["score"]):
            for head, curve in enumerate(heads):
                rng = report.get("position_range", {}).get(name, [[None] * len(heads)] * len(c["score"]))[layer][head]
                label = f"L{layer}H{head}" + (f" works at {rng[0]}–{rng[1]}" if rng else "")
                ax.plot(c["positions"], curve, label=label, linestyle="-" if layer else "--", linewidth=1)
        ax.axhline(THRESHOLD, color="grey", linewidth=0.8, linestyle=":")
        if trained_last is not None and c["positions"][-1] > trained_last:
            ax.axvspan(trained_last + 0.5, c["positions"][-1] + 0.5, color="grey", alpha=0.15,
                       label="not covered by training")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{name.replace('_', ' ')} score per position", fontsize=9)
        ax.set_xlabel("query position in the probe (0 = <bos>)")
        ax.set_ylabel("mean attention probability")
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle("where each head works: the report's scores are these curves averaged over positions", fontsize=9)
    save_figure(fig, run_dir, "position_scores.png", dpi=90)


def head_title(report: dict, kind: str, score_name: str, head) -> str:
    """The attention.png panel title of ``head`` as a ``kind`` head: what it is, judged by the
    report's per-position verdict (``formed``, ``position_range``) where there is one, so a head
    that works at the positions shown is never titled absent."""
    layer, h = head
    value = report["scores"][score_name][layer][h]
    label = score_name.replace("_", "-")
    rng = report.get("position_range", {}).get(score_name, {})
    rng = rng[layer][h] if rng else None
    formed = report["formed"][score_name][layer][h] if "formed" in report else value > THRESHOLD
    if formed and rng:
        return (f"{kind} head L{layer}H{h}: works at positions {rng[0]}–{rng[1]}\n"
                f"({label} {value:.2f} averaged over every probe position)")
    if formed:
        return f"{kind} head L{layer}H{h} ({label} {value:.2f})"
    return f"no {kind} head formed: best is L{layer}H{h} ({label} {value:.2f} ≤ {THRESHOLD})"


def plot_top_patterns(run_dir, report):
    """attention.png: the patterns of the top prefix-matching (layer ≥ 1) and previous-token heads
    on a repeated random segment, titled by what they are (``head_title``) — and attention.html
    (circuitsvis, with the lens extra)."""
    heads = []
    for kind, key, score_name in (("induction", "top_induction_head", "prefix_matching"),
                                  ("previous-token", "top_previous_token_head", "previous_token")):
        head = report.get(key)
        if head:
            heads.append((head_title(report, kind, score_name, head), head))
    if not heads:
        return
    model, vocab = load(run_dir)
    symbols = [i for i, t in enumerate(vocab.tokens) if t.startswith("t")]
    segment = min(12, (model.cfg.n_ctx - 1) // 2)
    tokens = repeated_random_tokens(np.random.default_rng(0), symbols, 1, segment, bos_id=vocab.index["<bos>"])
    patterns = attention_patterns(model, tokens)
    fig, axes = subplots(1, len(heads), figsize=(5.4 * len(heads), 4.8))
    for ax, (title, (layer, head)) in zip(np.atleast_1d(axes), heads):
        heatmap(ax, patterns[layer, 0, head].numpy(), vmin=0, vmax=1, cmap="Blues",  # (query, key)
                colorbar_label="attention probability")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("key position (token attended to)")
        ax.set_ylabel("query position")
    fig.suptitle(f"a random segment of {segment} tokens, repeated (positions 0–{2 * segment})", fontsize=9)
    save_figure(fig, run_dir, "attention.png", dpi=90)
    try:  # the interactive view needs the lens extra (circuitsvis); the PNG does not
        from minitf.viz import attention_html

        layer = heads[0][1][0]
        attention_html(model, tokens, layer, vocab, path=os.path.join(run_dir, "attention.html"))
    except ImportError:
        pass


def plot_phase_diagram(out: str, grid: list[dict]) -> None:
    """Write ``out/phase_diagram.png``: two heatmaps, ICL and IWL accuracy in [0, 1] (rows p_bursty,
    the smallest at the bottom; columns n_classes), each cell's value written in it. ``grid``:
    ``sweep.json`` rows, each with ``p_bursty``, ``n_classes``, ``icl`` and ``iwl``; raises
    ``StopIteration`` if a grid combination has no row."""
    ps, ks = sorted({g["p_bursty"] for g in grid}), sorted({g["n_classes"] for g in grid})
    fig, axes = subplots(1, 2, figsize=(9, 3.8))
    for ax, key in zip(axes, ("icl", "iwl")):
        arr = np.array([[next(g[key] for g in grid if g["p_bursty"] == p and g["n_classes"] == k) for k in ks]
                        for p in ps])
        heatmap(ax, arr, ps, ks, vmin=0, vmax=1, cmap="magma", origin="lower", annotate="{:.2f}", fontsize=9,
                colorbar_label=f"{key.upper()} accuracy")
        ax.set_xlabel("n_classes K")
        ax.set_ylabel("p_bursty")
        ax.set_title(f"{key.upper()} accuracy")
    save_figure(fig, out, "phase_diagram.png")


def plot_follow_rate(out: str, rows: list[dict], filename: str = "follow_rate.png") -> str | None:
    """Wei et al. (2023)'s flipped-label picture: the follow rate (flipped-label answers that
    follow the context, in [0, 1]) against the ICL-vs-IWL balance ``icl − iwl`` (−1: weights
    dominate, +1: the context does), one point per run and evaluation step of ``rows``
    (``follow_rate_sweep`` rows), coloured by training step, one marker per (p_bursty,
    n_classes, fresh_fraction). None when ``rows`` is empty."""
    if not rows:
        return None
    fig, ax = subplots(figsize=(7, 4.5))
    markers = iter("osD^v<>phX*" * 4)
    key = lambda r: (r["setting"]["p_bursty"], r["setting"]["n_classes"], r["setting"]["fresh_fraction"],  # noqa: E731
                     r["setting"].get("relabel_fraction", 0.0))
    settings = sorted({key(r) for r in rows})
    steps = [r["setting"]["step"] for r in rows]
    for p, k, fresh, relabel in settings:
        mine = [r for r in rows if key(r) == (p, k, fresh, relabel)]
        sc = ax.scatter([r["icl"] - r["iwl"] for r in mine], [r["follow_rate"] for r in mine],
                        c=[r["setting"]["step"] for r in mine], vmin=min(steps), vmax=max(steps),
                        cmap="viridis", marker=next(markers),
                        label=f"p_bursty {p}, K {k}, fresh {fresh}, relabel {relabel}")
    fig.colorbar(sc, ax=ax, label="training step")
    ax.set_xlabel("ICL − IWL accuracy  (← weights dominate | context dominates →)")
    ax.set_ylabel("flipped labels: follow rate")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=7)
    return save_figure(fig, out, filename)
