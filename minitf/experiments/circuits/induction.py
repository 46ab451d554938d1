"""``induction``: a 2-layer attention-only model on repeated random segments.

After Olsson et al. (2022): the second repeat becomes predictable once a previous-token
head (layer 0) and an induction head (layer 1) form, abruptly — the phase change. Every
``eval_every`` steps the run records the repeat losses, every head's scores and the ICL
score into metrics.jsonl; the report marks the phase-change step (the largest drop of the
second-repeat loss between two evaluations) and ablates the top induction head.
Run the 1-layer control with ``--set n_layers=1``: one layer cannot form the circuit.
"""
import numpy as np

from minitf.config import ModelConfig, TrainConfig
from minitf.data import collate
from minitf.evaluate import per_position_loss
from minitf.experiments.base import Experiment, RunContext
from minitf.experiments.circuits.plots import plot_induction
from minitf.probes import (
    MIN_RUN,
    ablation_effect,
    all_scores,
    head_verdicts,
    icl_score,
    repeated_random_tokens,
    score_curves,
    select_heads,
)
from minitf.report import format_table
from toy_tasks.induction import BOS, InductionTask

EVAL_SEQUENCES = 256
PROBE_SEQUENCES = 32


class InductionExperiment(Experiment):
    """``induction``: one phase on ``InductionTask`` sequences (a random segment repeated), tracking
    the repeat losses, per-head scores and the ICL score to find the phase change (Olsson et al.
    2022; Elhage et al. 2021)."""

    name = "induction"
    description = "induction heads on repeated random tokens (2-layer attention-only)"
    task_cls = InductionTask
    artifacts = ("scores.png", "head_scores.png", "position_scores.png", "attention.png", "attention.html")

    def default_model(self, task) -> ModelConfig:
        """2-layer attention-only, d_model 64, 4 heads of 16, vocab_size = the task's vocab,
        n_ctx = seq_len − 1."""
        return ModelConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=0,
                           vocab_size=len(self.vocab(task)), n_ctx=task.seq_len - 1)

    def default_train(self) -> TrainConfig:
        """3000 steps of 32 sequences, lr 3e-3, 50 warmup steps, evaluations every 100 steps,
        checkpoints every 500."""
        return TrainConfig(steps=3000, batch_size=32, lr=3e-3, warmup=50, eval_every=100, checkpoint_every=500)

    def max_seq_len(self, task) -> int:
        """``task.seq_len`` tokens."""
        return task.seq_len

    def run(self, ctx: RunContext) -> dict:
        """One phase, ``train``, on ``task.sample``; every evaluation (256 full-length sequences)
        logs ``loss_first_repeat`` / ``loss_second_repeat`` (nats/token), ``icl_score`` (nats;
        negative = in-context learning) and ``scores`` (``all_scores`` on 32 repeated-random-symbol
        probes). Report keys: those four at the end, ``phase_change_step`` and
        ``scores_at_phase_change`` (``phase_change``; None without a ≥ 1-nat drop),
        ``top_induction_head`` and ``top_previous_token_head`` ([layer, head], any layer),
        ``ablation`` (``ablation_effect`` on the second-repeat loss of the heads with
        prefix-matching ≥ 0.5 in any layer, else the best one) and ``random_ablation`` (the same
        number of random other heads: the control; None if there are too few). Per position, on the
        same probes: ``score_curves`` (``probes.score_curves``: each score at each query position),
        ``trained_positions`` ([0, last]: the positions the training inputs covered), and
        ``position_range`` / ``formed`` / ``score_trained`` (``probes.head_verdicts``: where each
        head works, whether it formed, judged on the trained positions)."""
        task, vocab = ctx.task, ctx.vocab
        eval_batch = collate(task.sample(ctx.eval_rng(), EVAL_SEQUENCES, full_length=True), vocab)
        symbols = vocab.encode(task.symbols())
        probe_tokens = repeated_random_tokens(ctx.eval_rng(1), symbols, PROBE_SEQUENCES, task.segment_len,
                                              bos_id=vocab.index[BOS])
        first = [p - 1 for p in task.first_repeat()]  # target index t predicts token t+1
        second = [p - 1 for p in task.second_repeat()]

        def measure(model, step=None):
            losses = per_position_loss(model, eval_batch)
            return {"loss_first_repeat": losses[first].mean().item(),
                    "loss_second_repeat": losses[second].mean().item(),
                    "icl_score": icl_score(model, eval_batch, early=first[len(first) // 2],
                                           late=second[len(second) // 2], losses=losses),
                    "scores": all_scores(model, probe_tokens[:, :-1], task.segment_len, start=1)}

        model = ctx.new_model()
        ctx.train(model, task.sample, evaluate=measure)
        model.eval()
        final = measure(model)
        phase_step, at_phase = phase_change(ctx.history("train"))
        scores = final["scores"]
        top = top_head(scores["prefix_matching"])
        # induction heads are redundant (several form): ablate every head with prefix-matching
        # ≥ 0.5 in any layer (a causal conv lets them form in layer 0), or the top one if none
        # passes (layer-major order); the control ablates as many random other heads
        heads = sorted(select_heads(scores["prefix_matching"], threshold=0.5, min_layer=0))

        def second_repeat_loss(m):
            return per_position_loss(m, eval_batch)[second].mean().item()
        ablation = ablation_effect(model, [tuple(h) for h in heads], second_repeat_loss)
        others = [(layer, h) for layer in range(ctx.model_cfg.n_layers) for h in range(ctx.model_cfg.n_heads)
                  if [layer, h] not in heads]
        random_ablation = None
        if len(others) >= len(heads):
            rng = np.random.default_rng([ctx.train_cfg.seed, 4242])
            picked = sorted(others[i] for i in rng.choice(len(others), len(heads), replace=False))
            random_ablation = ablation_effect(model, picked, second_repeat_loss)
        curves = score_curves(model, probe_tokens[:, :-1], task.segment_len, start=1)
        trained = min(ctx.model_cfg.n_ctx, task.seq_len - 1)  # the training batches' input length
        return {**final, "phase_change_step": phase_step, "scores_at_phase_change": at_phase,
                "top_induction_head": top, "top_previous_token_head": top_head(scores["previous_token"]),
                "ablation": ablation, "random_ablation": random_ablation, "score_curves": curves, "trained_positions": [0, trained - 1],
                **head_verdicts(curves, trained)}

    def marks(self, report: dict) -> dict:
        """``{"phase change": phase_change_step}`` (None when there was none)."""
        return {"phase change": report.get("phase_change_step")}

    def plots(self, run_dir: str, report: dict) -> None:
        """scores.png, head_scores.png, attention.png and, with the lens extra, attention.html
        (``plot_induction``)."""
        plot_induction(run_dir, report)

    def summary(self, report: dict) -> str:
        """The repeat losses (nats/token) and ICL score, every head's four scores, the phase-change
        step and the ablation's effect on the second-repeat loss."""
        first, second = report["loss_first_repeat"], report["loss_second_repeat"]
        rows = [["first repeat", first], ["second repeat", second],
                ["second / first", second / first if first else None], ["ICL score", report["icl_score"]]]
        out = [format_table(["tokens", "loss (nats/token)"], rows, title=f"induction — {report['architecture']}")]
        s = report["scores"]
        head_rows = [[f"L{layer}H{h}", s["previous_token"][layer][h], s["prefix_matching"][layer][h],
                      s["duplicate_token"][layer][h], s["copying"][layer][h]]
                     for layer in range(len(s["copying"])) for h in range(len(s["copying"][0]))]
        out.append(format_table(["head", "prev-token", "prefix-match", "duplicate", "copying"], head_rows))
        out.append(phase_sentence(report))
        out.extend(head_sentences(report))
        if report["ablation"]:
            out.append(ablation_sentence(report))
        return "\n\n".join(out)


def phase_sentence(report: dict) -> str:
    """One sentence on the phase change: its step, or that there was none."""
    if report.get("phase_change_step") is None:
        return ("No phase change: the second-repeat loss did not fall by 1 nat or more over the evaluations "
                "(train longer, e.g. --set steps=1500).")
    return f"Phase change at step {report['phase_change_step']} (the steepest drop of the second-repeat loss)."


def _name(head) -> str:
    return f"L{head[0]}H{head[1]}"


def _formed(report: dict, score: str, head) -> bool:
    """Whether ``head`` formed as a ``score`` head: the report's ``formed`` (judged per position on
    the trained positions), or for a report without it the mean score above 0.5."""
    if "formed" in report:
        return report["formed"][score][head[0]][head[1]]
    return report["scores"][score][head[0]][head[1]] > 0.5


def head_sentences(report: dict) -> list[str]:
    """Where the previous-token and induction heads (any layer) work, one sentence each: the heads
    that formed with the positions they work at, or that none formed."""
    if "formed" not in report:
        return []
    out = []
    for kind, score in (("Previous-token", "previous_token"), ("Induction", "prefix_matching")):
        formed = report["formed"][score]
        heads = [(layer, h) for layer in range(len(formed)) for h in range(len(formed[layer]))
                 if formed[layer][h]]
        if not heads:
            out.append(f"{kind} heads: none formed (no head above 0.5 on {MIN_RUN} or more consecutive positions).")
            continue
        parts = []
        for layer, h in heads:
            rng = report["position_range"][score][layer][h]
            where = f"positions {rng[0]}–{rng[1]}" if rng else "on average"
            parts.append(f"{_name((layer, h))} ({where}; mean {report['scores'][score][layer][h]:.2f} over all)")
        out.append(f"{kind} heads: {', '.join(parts)}.")
    return out


def ablation_sentence(report: dict) -> str:
    """What ablating the selected heads (any layer) did, and the random-heads control, in clean sentences."""
    a = report["ablation"]
    names = ", ".join(_name(h) for h in a["heads"])
    effect = f"second-repeat loss {a['base']:.3f} → {a['ablated']:.3f} nats/token"
    r = report.get("random_ablation")
    control = (f" Ablating as many random other heads ({', '.join(_name(h) for h in r['heads'])}): "
               f"{r['base']:.3f} → {r['ablated']:.3f}." if r else "")
    if any(_formed(report, "prefix_matching", h) for h in a["heads"]):
        return f"Ablating the induction heads {names}: {effect}.{control}"
    return (f"No induction head formed (prefix-matching ≤ 0.5). Ablating the best candidate, {names}: "
            f"{effect}.{control}")


def top_head(score: list[list[float]], min_layer: int = 0):
    """(layer, head) with the highest score at or above ``min_layer``; None if there is none."""
    arr = np.asarray(score)
    if arr.shape[0] <= min_layer:
        return None
    sub = arr[min_layer:]
    layer, head = np.unravel_index(int(sub.argmax()), sub.shape)
    return [int(layer) + min_layer, int(head)]


def phase_change(metrics: list[dict], min_total_drop: float = 1.0):
    """(step, scores) at the steepest drop of the second-repeat loss between evaluations.

    Returns (None, None) unless the loss fell by at least ``min_total_drop`` nats over the
    run — without that there was no phase change to mark.
    """
    evals = [(r["step"], r["eval"]) for r in metrics if "eval" in r and "loss_second_repeat" in r["eval"]]
    if len(evals) < 2 or evals[0][1]["loss_second_repeat"] - evals[-1][1]["loss_second_repeat"] < min_total_drop:
        return None, None
    drops = [(e0["loss_second_repeat"] - e1["loss_second_repeat"], s1, e1)
             for (s0, e0), (s1, e1) in zip(evals, evals[1:])]
    _, step, at = max(drops, key=lambda d: d[0])
    return step, at.get("scores")
