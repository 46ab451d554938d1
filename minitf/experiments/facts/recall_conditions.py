"""The recall conditions of the headline, end to end: ``recall_supervised`` (the format taught on
the phase-1 world, then phase 2) and ``recall_rl`` (REINFORCE on the documents-only facts, then
phase 2 replaying its filtered recalls), and their summary lines. The recall format lives in
``recall``, REINFORCE in ``reinforce``; this module runs both (docs/recall.md)."""
import dataclasses
from functools import partial

from minitf.experiments.facts.binding import phase2_sampler, phase2_train
from minitf.experiments.facts.recall import (
    RL_EVAL_EVERY,
    answer_hits,
    evaluate_recall,
    generate_recall,
    greedy_reward,
    recall_mixture,
    recall_target,
    recall_world,
)
from minitf.experiments.facts.reinforce import reinforce_sampler, reinforce_step, replay_pairs, rl_log


def run_recall(ctx, model, world, qset, phase1_sample, phase2_cfg) -> dict:
    """Train and evaluate the recall conditions (after the headline's phases; ``RECALL_PHASES``).
    Returns ``results`` ({condition: ``RelationalQueries.evaluate`` dict}) and the report keys
    ``recall_stats`` ({condition: ``recall_stats``}), ``recall_examples``, ``recall_rl_log``,
    ``recall_rl_heldout_reward`` ({supervised_start, after_rl}: greedy reward on held-out
    phase-1 queries, ``proportion`` records) and ``recall_queries`` (train / heldout / premises counts)."""
    cfg, seed, vocab = ctx.config, ctx.train_cfg.seed, ctx.vocab
    rw = recall_world(world, seed)
    targets = [(q, recall_target(q, world.inverse)) for q in rw.train]
    ctx.load_phase(model, "phase1")
    mix = recall_mixture(world, targets, rw.premises, phase1_sample)
    ctx.train(model, mix, phase="phase1_recall", train_cfg=phase2_train(ctx.train_cfg, cfg.recall_steps))
    # phase 2 as in_weights trains it, replaying each recall phase's own mix
    new_docs, fraction = partial(world.document, facts=world.new_sentences()), world.task.new_fact_fraction
    ctx.train(model, phase2_sampler(new_docs, fraction, mix), phase="phase2_recall_sup", train_cfg=phase2_cfg)
    results, stats, examples = {}, {}, {}
    cond = "recall_supervised"
    results[cond], stats[cond], examples[cond] = evaluate_recall(model, world, qset, vocab, truths=rw.truths)

    ctx.load_phase(model, "phase1_recall")
    start = greedy_reward(model, world, vocab, rw.heldout)
    docs_start = greedy_reward(model, world, vocab, rw.docs_only)
    rl_cfg = dataclasses.replace(ctx.train_cfg, steps=cfg.rl_steps, lr=cfg.rl_lr, warmup=0, weight_decay=0.0,
                                 grad_clip=1.0, log_every=1, eval_every=RL_EVAL_EVERY,
                                 checkpoint_every=RL_EVAL_EVERY)
    if rw.docs_only and cfg.rl_steps:  # no environment without the syllogism split's forest
        ctx.train(model, reinforce_sampler(rw), phase="recall_rl", train_cfg=rl_cfg,
                  step_loss=reinforce_step(world, vocab, rw.truths, seed * 1000 + ctx.stream("recall_rl")),
                  evaluate=lambda m, step: {"heldout_reward": greedy_reward(m, world, vocab, rw.heldout)["acc"]})
    model.eval()
    after = greedy_reward(model, world, vocab, rw.heldout)
    log = rl_log(ctx.history("recall_rl") if "recall_rl" in ctx.done else [], start["acc"])  # none: no environment
    # phase 2 replays the RL model's own greedy recalls, only those rewarded that hold the needed facts
    pool = rw.train + rw.docs_only
    said = generate_recall(model, vocab, pool)
    own = replay_pairs(pool, said, answer_hits(model, world, vocab, pool, said), world.inverse)
    replay = recall_mixture(world, own, rw.premises, phase1_sample)
    ctx.train(model, phase2_sampler(new_docs, fraction, replay), phase="phase2_recall_rl", train_cfg=phase2_cfg)
    cond = "recall_rl"
    results[cond], stats[cond], examples[cond] = evaluate_recall(model, world, qset, vocab, truths=rw.truths)
    return {"results": results, "recall_stats": stats, "recall_examples": examples, "recall_rl_log": log,
            "recall_rl_heldout_reward": {"supervised_start": start, "after_rl": after},
            "recall_rl_docs_only_start": docs_start, "recall_rl_replayed": {"kept": len(own), "of": len(pool)},
            "recall_queries": {"train": len(rw.train), "docs_only": len(rw.docs_only), "heldout": len(rw.heldout),
                               "premises": len(rw.premises)}}


def recall_lines(report: dict) -> str:
    """The summary's recall lines: precision / hit rate per condition and kind, RL's held-out reward."""
    if "recall_stats" not in report:
        return ""
    lines = [f"\n{c}, {k}: recall precision {v['recall_precision']['acc']:.3f}, hit rate "
             f"{v['recall_hit_rate']['acc']:.3f}, {v['mean_sentences']:.2f} sentences"
             for c, per in report["recall_stats"].items() for k, v in per.items()]
    rw = report["recall_rl_heldout_reward"]
    s, a = rw["supervised_start"], rw["after_rl"]
    lines.append(f"\nrecall_rl: held-out phase-1 reward {s['acc']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}] "
                 f"(supervised start) → {a['acc']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}] after "
                 f"{max(r['step'] for r in report['recall_rl_log'])} REINFORCE steps (n={a['n']})")
    return "\n" + "".join(lines)
