"""``headline`` (and ``reversal`` / ``syllogism`` alone): in-weights vs in-context generalization.

After Lampinen et al. (2025, arXiv 2505.00661) and Berglund et al. (2023, the reversal curse),
at tiny scale (docs/science.md, docs/headline.md). Phases:
  phase1_relations  (with both splits) the curriculum's start: episodes of relation facts only;
  phase1         episodes with fresh bindings (→ in-context ability) + fixed-world documents;
  phase2         continue on the *new* facts, one direction only, replaying phase 1's mix;
  phase2_oracle  the same, plus the true reversals / syllogism conclusions;
  phase2_self    the same, plus the reversals / conclusions the phase-1 model itself
                 generated (greedy) with the new facts in its context;
  then (``recall``, on by default) phase1_recall, phase2_recall_sup, recall_rl (REINFORCE),
                 phase2_recall_rl (``minitf.experiments.facts.recall``);
  phase2_identity (``identity_fraction`` > 0, the default) the fourth bridge, identity facts
                 (Ma et al. 2026, "Identity Bridge", arXiv 2602.02470): phase 2's new facts,
                 still one direction only, with ``identity_fraction`` of the documents made of
                 identity sentences ``A are A .`` (the identity relation r_id, spelled with the
                 existing word ``are`` so the vocabulary — and every other condition — is
                 unchanged) for every entity of the new relation facts; no reversed relation.
Conditions, all on the same new facts and queries:
  in_weights (phase2, no context) · in_context (phase-1 model, the facts among distractors
  in the prompt) · augmented_oracle / augmented_self (their phase-2 models, no context) ·
  retrieval (phase2 model, the trained sentences that mention the query's entity in context)
  · phase1_facts (the fixed world, both directions: a sanity row) · recall_supervised /
  recall_rl (their phase-2 models recall facts into their own context first: docs/recall.md)
  · identity_bridge (phase2_identity's model, no context).
Each recall query is scored three ways (a prototype found the k-way score leaks through
unembedding similarity): k-way among same-role distractors, top-1 over all entities, and
direction — p(answer | x r⁻¹) vs p(answer | x r), which association alone cannot decide (a
prior on which entities are subjects of r can: ``direction_control`` measures that).
``by_shared_relation`` splits in-context top-1 by whether another context fact has the query's
relation: where none has, a reversal can be answered by relation alone.
``retrieval_by_matching_facts`` splits retrieval top-1 by how many retrieved facts hold the
query's entity in its role: with more than one, only the relation can pick the fact.
"""
import dataclasses
import os
from dataclasses import dataclass
from functools import partial

import numpy as np

from minitf.config import ModelConfig, TrainConfig
from minitf.experiments.base import Experiment, RunContext
from minitf.experiments.facts.binding import (
    BINDING_PHASES,
    Phase2Schedule,
    binding_model,
    binding_train,
    episode_accuracy,
    phase2_sampler,
    phase2_train,
    self_generated,
)
from minitf.experiments.facts.plots import plot_results, plot_rl
from minitf.experiments.facts.queryset import RelationalQueries
from minitf.experiments.facts.recall import RECALL_CONDITIONS, RECALL_PHASES
from minitf.experiments.facts.recall_conditions import recall_lines, run_recall
from minitf.probes import ablate_heads, all_scores, repeated_random_tokens, select_heads
from minitf.report import format_table
from toy_tasks.relational import RelationalTask
from toy_tasks.relational_facts import ARE, Fact

CONDITIONS = ("in_weights", "in_context", "augmented_self", "augmented_oracle", "retrieval",
              "phase1_facts") + RECALL_CONDITIONS + ("identity_bridge",)
IDENTITY = ARE  # the identity relation r_id of "A are A ." (an existing word: the vocabulary is unchanged)


@dataclass
class HeadlineConfig(Phase2Schedule):
    """The headline's schedule (phase 1's mixed part is TrainConfig.steps)."""

    # steps of each phase-2 run; entities in both roles need a little more than 200 (oracle 0.955 at 200)
    phase2_steps: int = 250
    # Curriculum (with both splits): phase 1 first trains this many steps on episodes of relation
    # facts only, then on the full mix. Premise chains from the start slowed relation binding
    # (in-context reversal top-1 0.68 after 1800 mixed steps vs 0.78 after 700 + 700, 0.80 after 900 + 700).
    relation_steps: int = 900
    # The recall conditions (docs/recall.md): recall_supervised and recall_rl after the others
    # (off: the six conditions alone, as before issue #24)
    recall: bool = True
    recall_steps: int = 300  # supervised recall phase (phase1_recall) from phase 1's weights
    rl_steps: int = 150  # REINFORCE steps from phase1_recall's weights (recall_rl)
    rl_lr: float = 1e-4  # REINFORCE learning rate (Adam, constant)
    # identity_bridge (Ma et al. 2026): share of phase2_identity's documents that are identity
    # sentences "A are A ." about the new facts' entities; 0 = no identity_bridge condition
    identity_fraction: float = 0.25

    def validate(self):
        """Returns ``self``; raises ``ValueError`` if ``relation_steps`` or ``rl_steps`` < 0,
        ``recall_steps`` or ``phase2_steps`` < 1 or ``rl_lr`` <= 0."""
        if not 0 <= self.identity_fraction < 1:
            raise ValueError(f"identity_fraction must be in [0, 1) (got {self.identity_fraction})")
        if min(self.relation_steps, self.recall_steps - 1, self.rl_steps) < 0 or not self.rl_lr > 0:
            raise ValueError("relation_steps and rl_steps must be >= 0, recall_steps >= 1 and rl_lr > 0 (got "
                             f"{self.relation_steps}, {self.recall_steps}, {self.rl_steps}, {self.rl_lr})")
        return super().validate()


class HeadlineExperiment(Experiment):
    """``headline``: phase 1 binds facts in context (after a relation-only curriculum start
    with both splits), then three phase-2 runs from phase 1's weights learn new facts in one
    direction (plain, + oracle inferences, + self-generated ones); every condition answers the
    same reversal / syllogism queries (Lampinen et al. 2025; Berglund et al. 2023)."""

    name = "headline"
    description = "in-weights vs in-context reversal & syllogism, with augmentation and retrieval"
    task_cls = RelationalTask
    config_cls = HeadlineConfig
    # data streams follow this order: phases added later go last, so earlier phases keep their streams
    phases = BINDING_PHASES + ("phase2", "phase2_oracle", "phase2_self") + RECALL_PHASES + ("phase2_identity",)
    artifacts = ("results.png", "recall_rl.png")
    splits = ("reversal", "syllogism")
    phase1_steps = 700

    def default_task(self):
        """``RelationalTask`` with this experiment's ``splits``."""
        return RelationalTask(splits=self.splits)

    def pin_inputs(self, task):
        """A user's facts file (``--facts``) is pinned by its path and content hash."""
        if task.facts_file and not task.facts_sha256:
            return dataclasses.replace(task, facts_file=os.path.abspath(task.facts_file),
                                       facts_sha256=task.user_facts().sha256)
        return task

    def default_model(self, task) -> ModelConfig:
        """``binding_model``: 2-layer attention-only, d_model 128, 4 heads of 32, conv_kernel 4,
        vocab_size = the task's vocab, n_ctx = ``task.max_seq_len()``."""
        return binding_model(len(self.vocab(task)), task.max_seq_len())

    def default_train(self) -> TrainConfig:
        """``binding_train`` with ``steps`` = ``phase1_steps`` (700 here, 1000 for reversal/syllogism)."""
        # steps of the mixed phase 1; the headline adds the task's relation_steps before it
        return dataclasses.replace(binding_train(), steps=self.phase1_steps)

    def max_seq_len(self, task) -> int:
        """``task.max_seq_len()``, in tokens."""
        return task.max_seq_len()

    # -- phases ----------------------------------------------------------------------------
    def run(self, ctx: RunContext) -> dict:
        """Phases: ``phase1_relations`` (``relation_steps`` steps, only with both splits and
        relation_steps > 0: the phase-1 mix with reversal-split episodes only), ``phase1``
        (``TrainConfig.steps``: episodes, else fixed-world documents; evaluated by
        ``episode_answer_acc``), then ``phase2``, ``phase2_oracle``, ``phase2_self`` (each
        ``phase2_steps`` from phase 1's weights: new-fact documents mixed with phase-1 data).
        Report keys: ``results`` ({condition: ``RelationalQueries.evaluate`` dict} for ``CONDITIONS``),
        ``self_generation`` (total / well_formed / correct), ``n_new_facts``,
        ``n_syllogism_queries``, ``n_entities``, ``episode_answer_acc`` (in [0, 1]), ``induction``
        (``induction_section``), ``in_weights_direction_control``,
        ``in_context_by_shared_relation``, ``retrieval_by_matching_facts``; with ``recall`` the
        two recall conditions join ``results`` and ``run_recall``'s keys join the report."""
        task, world = ctx.task, ctx.task.build_world(np.random.default_rng([ctx.train_cfg.seed, 77]))
        qset = RelationalQueries(world, ctx.vocab, ctx.eval_rng(1))
        fixed_docs = world.fixed_world_sentences()

        def phase1_sample(rng, n, splits=None):
            return [world.episode(rng, splits) if rng.random() < task.episode_fraction
                    else world.document(rng, fixed_docs) for _ in range(n)]

        probe_rng = ctx.eval_rng(2)
        probe_examples = [world.episode(probe_rng) for _ in range(256)]

        def phase1_eval(model, step):
            return {"episode_answer_acc": episode_accuracy(model, probe_examples, ctx.vocab)}

        model = ctx.new_model()
        schedule = ctx.config
        if schedule.relation_steps and len(task.split_list()) > 1:  # the curriculum: relations first
            ctx.train(model, lambda rng, n: phase1_sample(rng, n, ["reversal"]), phase="phase1_relations",
                      train_cfg=dataclasses.replace(ctx.train_cfg, steps=schedule.relation_steps),
                      evaluate=phase1_eval)
        ctx.train(model, phase1_sample, phase="phase1", evaluate=phase1_eval)
        results = {"in_context": qset.evaluate(model.eval(), "in_context")}
        by_shared_relation = qset.by_shared_relation(model)
        episode_acc = episode_accuracy(model, probe_examples, ctx.vocab)
        induction = induction_section(model, world, ctx, qset, results["in_context"])
        generated, gen_stats = self_generated(model, ctx.vocab, *augmentation_asks(world))

        phase2_cfg = phase2_train(ctx.train_cfg, schedule.phase2_steps)
        variants = [("phase2", [], "in_weights"), ("phase2_oracle", world.oracle_augmentation(), "augmented_oracle"),
                    ("phase2_self", generated, "augmented_self")]
        for phase, extra, condition in variants:
            ctx.load_phase(model, "phase1")
            sample = phase2_sampler(partial(world.document, facts=world.new_sentences() + extra),
                                    task.new_fact_fraction, phase1_sample)
            ctx.train(model, sample, phase=phase, train_cfg=phase2_cfg)
            model.eval()
            results[condition] = qset.evaluate(model, condition)
            if phase == "phase2":
                results["retrieval"] = qset.evaluate(model, "retrieval")
                results["phase1_facts"] = qset.evaluate(model, "phase1_facts")
                by_matching_facts = qset.retrieval_by_matching_facts(model)
                direction_control = qset.direction_control(model)
        identity = {}
        if schedule.identity_fraction > 0:  # the fourth bridge: identity facts, no reversed relation
            ctx.load_phase(model, "phase1")
            plain = phase2_sampler(partial(world.document, facts=world.new_sentences()), task.new_fact_fraction,
                                   phase1_sample)  # phase 2's own mix, as in_weights trains it
            ctx.train(model, identity_mixture(world, schedule.identity_fraction, plain),
                      phase="phase2_identity", train_cfg=phase2_cfg)
            model.eval()
            results["identity_bridge"] = qset.evaluate(model, "identity_bridge")
            identity = {"identity_bridge_direction_control": qset.direction_control(model),
                        "n_identity_facts": len(identity_facts(world))}
        recall = run_recall(ctx, model, world, qset, phase1_sample, phase2_cfg) if schedule.recall else {}
        results = {c: results[c] for c in CONDITIONS if c in results} | recall.pop("results", {})
        return {"results": results, "self_generation": gen_stats, **recall, **identity,
                "n_new_facts": len(world.new_facts), "n_syllogism_queries": len(world.queries["syllogism"]),
                "n_entities": len(world.entities), "episode_answer_acc": episode_acc, "induction": induction,
                "in_weights_direction_control": direction_control,
                "in_context_by_shared_relation": by_shared_relation,
                "retrieval_by_matching_facts": by_matching_facts}

    # -- report ------------------------------------------------------------------------------
    def summary(self, report: dict) -> str:
        """The conditions × splits accuracy table with chance, the direction control, the
        shared-relation and matching-facts splits, the induction-head ablation and the
        self-generation count."""
        results = report["results"]
        splits = [s for s in results["in_weights"]]
        header = ["condition"] + splits
        rows = [[c] + [results[c].get(s, {}).get("acc") for s in splits] for c in CONDITIONS if c in results]
        rows.append(["(chance)"] + [results["in_weights"][s]["chance"] for s in splits])
        table = format_table(header, rows, title=f"{self.name} — {report['architecture']}")
        gen = report["self_generation"]
        ind = report["induction"]
        strong = [h for h in ind["heads"] if ind["scores"]["prefix_matching"][h[0]][h[1]] > 0.5]
        label = ("induction heads (any layer, prefix-matching > 0.5)" if strong else
                 "no induction head formed (every prefix-matching ≤ 0.5); the top head by prefix-matching, any layer")
        ind_line = (f"\n{label}: {ind['heads']}; {ind['split']} "
                    f"{ind['base']:.3f} → {ind['ablated']:.3f} with them ablated, "
                    f"→ {ind['random_ablated']:.3f} with random heads {ind['random_heads']} ablated")
        control = report.get("in_weights_direction_control", {})
        control_line = "".join(f"\nin weights, {k} with an unrelated same-role answer: {v['acc']:.3f} "
                               f"(vs {results['in_weights'][k.replace('_control', '')]['acc']:.3f} for the true answer)"
                               for k, v in control.items())
        control_line += "".join(f"\nidentity bridge, {k} with an unrelated same-role answer: {v['acc']:.3f} "
                                f"(vs {results['identity_bridge'][k.replace('_control', '')]['acc']:.3f})"
                                for k, v in report.get("identity_bridge_direction_control", {}).items())
        shared = report.get("in_context_by_shared_relation", {})
        shared_line = "".join(f"\nin context, {k} when another context fact has the query's relation: "
                              f"{v['shared_relation']['acc']:.3f} (n={v['shared_relation']['n']}), when none has: "
                              f"{v['no_shared_relation']['acc']:.3f} (n={v['no_shared_relation']['n']})"
                              for k, v in shared.items())
        matching = report.get("retrieval_by_matching_facts", {})
        matching_line = "".join(f"\nretrieval, {k} with the query's entity in 1 / 2 / 3+ retrieved facts in its role: "
                               + " / ".join(f"{r['acc']:.3f} (n={r['n']})" if r["n"] else "-" for r in v.values())
                               for k, v in matching.items())
        return (f"{table}\n{control_line}{shared_line}{matching_line}\n{ind_line}\n\nself-generated augmentation: {gen['correct']}/{gen['total']} generated "
                f"inferences correct; in-context episode answer accuracy at the end of phase 1: "
                f"{_fmt(report['episode_answer_acc'])}{recall_lines(report)}")

    def plots(self, run_dir: str, report: dict) -> None:
        """``results.png`` (``plot_results``) and, with the recall conditions, ``recall_rl.png`` (``plot_rl``)."""
        plot_results(run_dir, report, CONDITIONS)
        if "recall_rl_log" in report:
            plot_rl(run_dir, report)

    def loss_branches(self) -> dict:
        """The phase-2 runs (identity included) and ``phase1_recall`` branch from ``phase1``, the
        recall conditions' phase-2 runs from ``phase1_recall`` (recall_rl's REINFORCE is between)."""
        return ({phase: "phase1" for phase in ("phase2", "phase2_oracle", "phase2_self", "phase1_recall",
                                               "phase2_identity")}
                | {phase: "phase1_recall" for phase in ("phase2_recall_sup", "phase2_recall_rl")})


def _fmt(x):
    return "-" if x is None else f"{x:.3f}"


def identity_facts(world) -> list[Fact]:
    """``A are A`` (r_id) for every entity of the new relation facts, in first-seen order."""
    entities = dict.fromkeys(e for f in world.new_facts for e in (f.x, f.y))
    return [Fact(e, IDENTITY, e) for e in entities]


def identity_mixture(world, fraction: float, base):
    """phase2_identity's ``sample(rng, n)`` (a ``phase2_sampler``): an identity document
    (``identity_facts``) with probability ``fraction``, else ``base(rng, 1)`` (phase 2's own mix:
    forward new facts and replay)."""
    return phase2_sampler(partial(world.document, facts=identity_facts(world)), fraction, base)


def induction_section(model, world, ctx, qset, in_context: dict, threshold: float = 0.5) -> dict:
    """Which heads of the phase-1 model are induction heads (prefix-matching ≥ ``threshold`` on
    repeated random entity tokens, in *any* layer: with the causal conv they form in layer 0; the
    best one if none reaches it), and in-context accuracy with all of them ablated together (the
    circuit is redundant head by head) vs as many random other heads ablated (the control)."""
    cfg = model.cfg
    segment = min(20, (cfg.n_ctx - 1) // 2)
    tokens = repeated_random_tokens(ctx.eval_rng(3), ctx.vocab.encode(world.entities), 64, segment,
                                    bos_id=ctx.vocab.index["<bos>"])
    scores = all_scores(model, tokens, segment, start=1)
    heads = select_heads(scores["prefix_matching"], threshold=threshold, min_layer=0)
    others = [[layer, h] for layer in range(cfg.n_layers) for h in range(cfg.n_heads) if [layer, h] not in heads]
    rng = np.random.default_rng([ctx.train_cfg.seed, 4242])
    random_heads = [others[i] for i in rng.choice(len(others), len(heads), replace=False)]
    split = "reversal_top1" if "reversal" in qset.queries else "syllogism_top1"

    def metric(m):
        return qset.evaluate(m, "in_context")[split]["acc"]

    out = {"scores": scores, "heads": heads, "split": f"in_context {split}", "base": in_context[split]["acc"]}
    with ablate_heads(model, [tuple(h) for h in heads]):
        out["ablated"] = metric(model)
    with ablate_heads(model, [tuple(h) for h in random_heads]):
        out["random_heads"], out["random_ablated"] = random_heads, metric(model)
    return out


def augmentation_asks(world) -> tuple[list[tuple], object]:
    """``self_generated``'s input for ``world``: per inference (each new fact's reversal, each
    syllogism's conclusion) ``(prompt, true fact, None)``, the fact or the premises in context,
    and ``well_formed``: the word is an entity."""
    # oracle_augmentation() lists the true inferences in the same order as the prompts
    asks = [(prompt, true, None) for (prompt, _), true in zip(world.augmentation_prompts(), world.oracle_augmentation())]
    entities = set(world.entities)
    return asks, lambda fact, word: word in entities


class ReversalExperiment(HeadlineExperiment):
    """``reversal``: the headline on relation facts only (the reversal curse), phase 1 of 1000 steps."""

    name = "reversal"
    description = "the headline on relation facts only (the reversal curse)"
    splits = ("reversal",)
    phase1_steps = 1000


class SyllogismExperiment(HeadlineExperiment):
    """``syllogism``: the headline on syllogisms only (two-hop deductions), phase 1 of 1000 steps."""

    name = "syllogism"
    description = "the headline on syllogisms only (two-hop deductions from premises)"
    splits = ("syllogism",)
    phase1_steps = 1000
