"""``semantic``: the semantic-structure benchmark, in weights vs in context, structured vs control world.

After Lampinen et al. (2025, arXiv 2505.00661): facts embedded in a coherent category hierarchy
reverse above chance even in weights, and category holdouts stay hard for every method. Phases:
  phase1                episodes of fresh hierarchies stated in context (→ in-context ability);
  <world>_phase2        continue on the world's training sentences (tests withheld as
                        toy_tasks.semantic describes), replaying episodes;
  <world>_oracle/_self  the same plus augmentation: each fact's reversal and other phrasings
                        (local) and what it inherits from its parent's stated facts (global),
                        true (oracle) or as the phase-1 model wrote them with the premises in
                        its context (self, greedy).
for world in structured, control. Conditions as in the headline: in_weights, in_context
(phase-1 model, the premises among distractor facts in the prompt), augmented_self,
augmented_oracle, retrieval (the trained facts about the query's subject and the categories
it is-a put in context), and trained_facts (trained facts asked as trained: a sanity row).
Every split is scored k-way among hard distractors and top-1 over all words of the answer's kind.
"""
from collections import defaultdict
from dataclasses import dataclass
from functools import partial

import numpy as np

from minitf.config import ModelConfig, TrainConfig
from minitf.experiments.base import Experiment, RunContext, format_checks
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
from minitf.experiments.facts.plots import plot_worlds
from minitf.experiments.facts.queryset import SemanticQueries
from minitf.report import format_table
from toy_tasks.hierarchy import BOS, SPLITS
from toy_tasks.semantic import SemanticTask

CONDITIONS = ("in_weights", "in_context", "augmented_self", "augmented_oracle", "retrieval", "trained_facts")
WORLDS = ("structured", "control")


@dataclass
class SemanticConfig(Phase2Schedule):
    """The semantic experiment's own setting: ``phase2_steps`` (a ``--set`` key, see docs/config.md)."""

    phase2_steps: int = 400  # steps of each phase-2 run


class SemanticExperiment(Experiment):
    """``semantic``: phase 1 binds fresh hierarchies in context; then, for the structured and the
    control world, three phase-2 runs from phase 1's weights (plain, + oracle, + self-generated
    augmentation), all conditions answering the same queries (Lampinen et al. 2025)."""

    name = "semantic"
    description = "category hierarchy in nonsense words: in weights vs in context, structured vs control"
    task_cls = SemanticTask
    config_cls = SemanticConfig
    # phase 1 uses the binding curriculum's stream (no relation-only start here)
    phases = BINDING_PHASES + tuple(f"{w}_{s}" for w in WORLDS for s in ("phase2", "oracle", "self"))
    main_model = ("structured_phase2",)  # minitf.load(run): the structured world's in-weights model
    artifacts = ("results.png",)

    def default_model(self, task) -> ModelConfig:
        """The headline's ``binding_model`` (2-layer attention-only, d_model 128, 4 heads of 32,
        conv_kernel 4), vocab_size = the task's vocab, n_ctx = ``task.max_seq_len()`` − 1."""
        return binding_model(len(self.vocab(task)), task.max_seq_len() - 1)  # the headline's, to compare

    def default_train(self) -> TrainConfig:
        """``binding_train``: 1000 phase-1 steps of 64 sequences, lr 3e-3, 100 warmup steps."""
        return binding_train()

    def max_seq_len(self, task) -> int:
        """``task.max_seq_len()``, in tokens."""
        return task.max_seq_len()

    def run(self, ctx: RunContext) -> dict:
        """Phases: ``phase1`` (``TrainConfig.steps`` of episodes; evaluated by ``episode_answer_acc``),
        then per world (structured, control) ``<world>_phase2``, ``<world>_oracle``,
        ``<world>_self`` (each ``phase2_steps`` from phase 1's weights: the world's documents
        with probability ``new_fact_fraction``, else phase-1 episodes). Report keys: ``results``
        ({world: {condition: ``SemanticQueries.evaluate`` dict}}), ``self_generation`` ({world:
        total / well_formed / correct}), ``episode_answer_acc`` (in [0, 1]), ``worlds`` (sizes:
        categories, stated_facts, training_sentences, queries per split), ``targets``
        (``targets``: three booleans)."""
        task = ctx.task
        worlds = task.build_worlds(ctx.train_cfg.seed)
        episodes = worlds["structured"]  # fresh episodes draw on the shared word pools only
        probe_rng = ctx.eval_rng(2)
        probe = [episodes.episode(probe_rng) for _ in range(256)]

        def phase1_sample(rng, n):
            return [episodes.episode(rng) for _ in range(n)]

        model = ctx.new_model()
        ctx.train(model, phase1_sample, phase="phase1",
                  evaluate=lambda m, step: {"episode_answer_acc": episode_accuracy(m, probe, ctx.vocab)})
        episode_acc = episode_accuracy(model.eval(), probe, ctx.vocab)
        phase2_cfg = phase2_train(ctx.train_cfg, ctx.config.phase2_steps)
        results, generation, by_sibling = {}, {}, {}
        for w, name in enumerate(WORLDS):
            world = worlds[name]
            qset = SemanticQueries(world, ctx.vocab, ctx.eval_rng(10 + w))
            ctx.load_phase(model, "phase1")
            res = {"in_context": qset.evaluate(model.eval(), "in_context")}
            generated, generation[name] = self_generated(model, ctx.vocab, *augmentation_asks(world))
            oracle = [(fact, phrasing) for _, fact, phrasing in world.augmentation_prompts()]
            for suffix, extra, condition in (("phase2", [], "in_weights"), ("oracle", oracle, "augmented_oracle"),
                                             ("self", generated, "augmented_self")):
                ctx.load_phase(model, "phase1")
                sample = phase2_sampler(subject_documents(world, world.training_sentences() + extra),
                                        task.new_fact_fraction, phase1_sample)
                ctx.train(model, sample, phase=f"{name}_{suffix}", train_cfg=phase2_cfg)
                model.eval()
                res[condition] = qset.evaluate(model, condition)
                if suffix == "phase2":
                    by_sibling[name] = qset.by_sibling(model)
                    res["retrieval"] = qset.evaluate(model, "retrieval")
                    res["trained_facts"] = qset.evaluate(model, "trained_facts")
            results[name] = {c: res[c] for c in CONDITIONS}
        return {"results": results, "self_generation": generation, "episode_answer_acc": episode_acc,
                "worlds": {n: {"categories": len(w.tree.categories), "stated_facts": len(w.facts),
                               "training_sentences": len(w.training_sentences()),
                               "queries": {s: len(q) for s, q in w.queries.items()}} for n, w in worlds.items()},
                "syllogism_by_sibling": by_sibling, "targets": targets(results)}

    def summary(self, report: dict) -> str:
        """Per world, the conditions × splits table (k-way / top-1 accuracy, with chance), the
        trained-facts row and the self-generation count; then the targets and phase 1's episode
        accuracy."""
        out = []
        for name in WORLDS:
            res = report["results"][name]
            splits = list(SPLITS)
            rows = [[c] + [_pair(res[c], s) for s in splits] for c in CONDITIONS[:-1]]
            rows.append(["(chance)"] + [_pair(res["in_weights"], s, "chance") for s in splits])
            trained = res["trained_facts"]
            out.append(format_table(["condition"] + [f"{s} (k-way / top-1)" for s in splits], rows,
                                    title=f"{self.name} — {name} world — {report['architecture']}"))
            split = report.get("syllogism_by_sibling", {}).get(name, {})
            if split:
                out.append("in weights, syllogism (k-way / top-1) when a sibling states the fact: "
                           + "; when none does: ".join(f"{v['syllogism']['acc']:.3f} / {v['syllogism_top1']['acc']:.3f} "
                                                       f"(n={v['syllogism']['n']})" if v else "-"
                                                       for v in (split.get("sibling_states"),
                                                                 split.get("no_sibling_states"))))
            gen = report["self_generation"][name]
            out.append(f"trained facts asked as trained: {_pair(trained, 'trained')}; self-generated augmentation "
                       f"{gen['correct']}/{gen['total']} correct\n")
        checks = report["targets"]
        out.append(format_checks(checks))
        out.append(f"in-context episode answer accuracy after phase 1: {report['episode_answer_acc']:.3f}")
        return "\n".join(out)

    def loss_branches(self) -> dict:
        """Every phase-2 run (both worlds) branches from ``phase1``."""
        return {phase: "phase1" for phase in self.phases[2:]}

    def plots(self, run_dir: str, report: dict) -> None:
        """``results.png``: k-way accuracy bars per condition and split, one panel per world
        (trained_facts left out)."""
        plot_worlds(run_dir, report, WORLDS, CONDITIONS[:-1], list(SPLITS))


def _pair(res: dict, split: str, key: str = "acc") -> str:
    return f"{res[split][key]:.3f} / {res[f'{split}_top1'][key]:.3f}" if split in res else "-"


def targets(results: dict) -> dict:
    """The issue's three checks, on the k-way scores (stated, never tuned for)."""
    s, c = results["structured"], results["control"]
    acc = {w: {cond: {split: r[split]["acc"] for split in SPLITS if split in r} for cond, r in res.items()}
           for w, res in results.items()}
    holdout_lowest = all(a["holdout"] <= min(a[x] for x in SPLITS if x in a) for w in acc
                         for cond, a in acc[w].items() if cond != "trained_facts" and "holdout" in a)
    return {"structured_in_weights_reversal_minus_control >= 0.10":
            s["in_weights"]["reversal"]["acc"] - c["in_weights"]["reversal"]["acc"] >= 0.10,
            "holdout_lowest_split_everywhere": holdout_lowest,
            "in_context >= in_weights on reversal and syllogism": all(
                acc[w]["in_context"][x] >= acc[w]["in_weights"][x] for w in acc for x in ("reversal", "syllogism"))}


def subject_documents(world, sentences: list[tuple]):
    """``new_document(rng)`` for ``phase2_sampler``: a document of a few of ``sentences`` ((fact,
    phrasing) pairs) about one subject, the subject drawn in proportion to its sentence count."""
    by_subject = defaultdict(list)
    for fact, phrasing in sentences:
        by_subject[fact.x].append((fact, phrasing))
    weights = np.array([len(v) for v in by_subject.values()], dtype=float)
    weights /= weights.sum()
    return partial(world.document, by_subject=by_subject, weights=weights)


def augmentation_asks(world) -> tuple[list[tuple], object]:
    """``self_generated``'s input for ``world``: per augmentation sentence ``(prompt, fact,
    phrasing)`` with the fact or the premises as context sentences before the sentence's start,
    and ``well_formed``: the word is of the answer's kind (a property for "has", else a category)."""
    asks = [([BOS] + [t for f, p in context for t in f.tokens(p)] + list(fact.prompt(phrasing)), fact, phrasing)
            for context, fact, phrasing in world.augmentation_prompts()]
    properties, categories = set(world.property_pool), set(world.tree.categories)
    return asks, lambda fact, word: word in (properties if fact.rel == "has" else categories)
