"""``ginc``: in-context learning as implicit Bayesian inference (Xie et al. 2021, GINC).

Two phases: ``mixture`` pretrains on documents from a uniform mixture of the in-distribution
concepts (HMMs, ``toy_tasks.ginc``); ``control`` pretrains a fresh model on documents of one
concept only (``control_concept``, the paper's ``--no_prior_slots``). Both are then prompted
with k examples of a concept and complete the last one; accuracy is the argmax over every
symbol against the paper's label (the concept's Bayes-optimal next token given the test example).

Report: ``accuracy[concepts][example_len][k]`` = ``proportion`` record (acc, ci95, chance =
1/n_symbols, n) for concepts ∈ in_distribution (mixture model, pretraining concepts),
out_of_distribution (mixture model, held-out concepts), control (control model, the
in-distribution prompts); ``reference[{ideal,document}_{in,out_of}_distribution]`` the same
records for two Bayes predictors with the pretraining prior (``REFERENCES``); ``results`` the headline records at the longest example and the
largest k; ``reference_gain[example_len]`` the document-Bayes reference's in-distribution
accuracy at the largest k minus at k = 0 (computed and printed before training: whether the
world leaves room for ICL at all); ``targets`` the checks with pass flags; ``zero_shot_wins``
the settings where k = 0 beats a k ≥ 1 (measured, either way). The world's delimiter
(``--set delimiter=shared|paper``, ``toy_tasks.ginc``) decides whether that room exists.
Source: Xie et al. 2021; p-lambda/incontext-learning.
"""
import dataclasses
from dataclasses import dataclass

from minitf.config import ModelConfig, TrainConfig, check_list
from minitf.evaluate import answer_logprobs, proportion, top1_correct
from minitf.experiments.base import Experiment, RunContext, format_checks
from minitf.report import format_table
from toy_tasks.ginc import GincTask

CONCEPT_SETS = ("in_distribution", "out_of_distribution", "control")
GAIN_FRACTION = 0.5  # the model's gain with k must reach half the document-Bayes reference's gain
# the example lengths where the reference leaves room (from 5 on, the test example pins the concept)
ICL_LENGTHS = (2, 3)
# Bayes references with the in-distribution prior (toy_tasks.ginc): "ideal" knows the prompt format
# (examples independent given the concept); "document" reads the prompt as one pretraining document.
REFERENCES = {"ideal": lambda task, exs, n, concepts: task.ideal_predictions(exs, n, concepts),
              "document": lambda task, exs, n, concepts: task.document_predictions(exs, concepts)}


@dataclass
class GincSettings:
    """The ``ginc`` experiment's own settings (``--set`` keys)."""

    example_lens: tuple[int, ...] = (2, 3, 5)  # tokens per prompt example (before its delimiter) [3,5,8,10]
    shots: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32, 64)  # k examples before the test one, those that fit in n_ctx
    prompts_per_cell: int = 500  # prompts per (concepts, example_len, k) [2500]
    control_steps: int = 400  # steps of the control phase; 0 = the same as ``steps``
    control_concept: int = 0  # the control's single pretraining concept (an in-distribution one)

    def lens(self) -> list[int]:
        """``example_lens`` as ints."""
        return list(self.example_lens)

    def ks(self) -> list[int]:
        """``shots`` as sorted ints."""
        return sorted(self.shots)

    def validate(self):
        """Returns ``self``; raises ``ValueError`` naming the field for unparsable or repeated
        lists, an example length < 2, a k < 0, prompts_per_cell < 1 or control_steps < 0."""
        check_list("example_lens", self.example_lens, at_least=2)
        check_list("shots", self.shots, at_least=0)
        if self.prompts_per_cell < 1:
            raise ValueError(f"prompts_per_cell must be >= 1 (got {self.prompts_per_cell})")
        if self.control_steps < 0 or self.control_concept < 0:
            raise ValueError("control_steps and control_concept must be >= 0")
        return self


def fitting_cells(config, n_ctx: int) -> dict:
    """``{example_len: [k ...]}``: the configured k whose prompts fit in n_ctx + 1 tokens."""
    return {n: [k for k in config.ks() if prompt_len(k, n) <= n_ctx + 1] for n in config.lens()}


def prompt_len(k: int, example_len: int) -> int:
    """Tokens of a prompt with ``k`` examples, the label included: k·(example_len + 1) + example_len."""
    return k * (example_len + 1) + example_len


class GincExperiment(Experiment):
    """``ginc``: a mixture-of-HMMs pretrained model vs a single-concept control, prompted with
    k examples (Xie et al. 2021)."""

    name = "ginc"
    description = "GINC: ICL as implicit Bayesian inference over a mixture of HMM concepts (Xie et al. 2021)"
    task_cls = GincTask
    config_cls = GincSettings
    phases = ("mixture", "control")
    main_model = ("mixture",)  # minitf.load(run) loads the mixture model, not the control trained after it
    artifacts = ("ginc_accuracy.png",)

    def default_model(self, task) -> ModelConfig:
        """2 layers (the paper's small GPT-2 has 4), d_model 64, 4 heads of 16, MLP 256,
        vocab_size = the task's vocab, n_ctx = doc_len − 1."""
        return ModelConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=256,
                           vocab_size=len(self.vocab(task)), n_ctx=task.doc_len - 1)

    def default_train(self) -> TrainConfig:
        """2000 steps of 32 blocks, lr 3e-3, 100 warmup steps, evaluations every 500 (1200 steps left
        the length-3 gain inside the intervals on seed 0: docs/ginc.md)."""
        return TrainConfig(steps=2000, batch_size=32, lr=3e-3, warmup=100, eval_every=500, checkpoint_every=1000,
                           log_every=25)

    def max_seq_len(self, task) -> int:
        """``task.doc_len`` tokens (prompts are cut to fit the model's context)."""
        return task.doc_len

    def cells(self, ctx: RunContext) -> dict:
        """``{example_len: [k ...]}``: the configured k whose prompts fit in n_ctx + 1 tokens."""
        return fitting_cells(ctx.config, ctx.model_cfg.n_ctx)

    def check(self, task, config, model_cfg) -> None:
        """Raises ``ValueError`` if control_concept ≥ n_concepts or some example length has no k
        whose prompt fits the model's context."""
        if config.control_concept >= task.n_concepts:
            raise ValueError(f"control_concept must be < n_concepts ({config.control_concept} >= {task.n_concepts}); "
                             f"pick an in-distribution concept 0..{task.n_concepts - 1}")
        cells = fitting_cells(config, model_cfg.n_ctx)
        if not all(cells.values()):
            short = [n for n, ks in cells.items() if not ks]
            raise ValueError(f"no k in shots={','.join(map(str, config.shots))!r} fits n_ctx={model_cfg.n_ctx} at example length(s) "
                             f"{short} (a prompt is k·(len + 1) + len tokens); lower example_lens or shots, or "
                             "raise doc_len")

    def run(self, ctx: RunContext) -> dict:
        """Phase ``mixture`` (``task.sampler()``), then ``control`` (``task.sampler([control_concept])``,
        ``control_steps``); evaluations log ``id_k0`` / ``id_kmax`` (accuracy in [0, 1] at the
        longest example). Then ``accuracy`` on ``prompts_per_cell`` prompts per cell (see the
        module docstring). Raises ``ValueError`` if control_concept ≥ n_concepts or no k fits."""
        task, cfg, vocab = ctx.task, ctx.config, ctx.vocab
        self.check(task, cfg, ctx.model_cfg)  # also checked before the run folder was made
        cells = self.cells(ctx)
        pool = task.symbols()
        id_concepts = list(range(task.n_concepts))
        ood_concepts = list(range(task.n_concepts, 2 * task.n_concepts))

        def prompts(concepts, n, k, salt):
            return task.prompts(ctx.eval_rng(salt), concepts, cfg.prompts_per_cell, k, n)

        def accuracy(model, examples):
            lp = answer_logprobs(model, examples, vocab)
            return proportion(top1_correct(lp, examples, vocab, pool), 1 / len(pool))

        reference_gain = {}
        for n, ks in cells.items():  # before training: does this world leave room for ICL at all?
            if 0 in ks:
                hits = [[pool[p] == e.answer for p, e in zip(task.document_predictions(exs, id_concepts), exs)]
                        for exs in (prompts(id_concepts, n, k, 100 * n + k) for k in (0, max(ks)))]
                reference_gain[str(n)] = float(sum(hits[1]) - sum(hits[0])) / cfg.prompts_per_cell
        print(f"ginc: delimiter={task.delimiter}; document-Bayes gain with k (largest k − k=0), per example "
              "length: " + ", ".join(f"{n}: {g:+.3f}" for n, g in reference_gain.items()), flush=True)
        longest = max(cells)
        track_sets = {k: prompts(id_concepts, longest, k, 1_000 + k) for k in (0, max(cells[longest]))}

        def track(model, step):
            k0, kmax = (accuracy(model, track_sets[k])["acc"] for k in sorted(track_sets))
            return {"id_k0": k0, "id_kmax": kmax}

        mixture = ctx.new_model()
        ctx.train(mixture, task.sampler(), phase="mixture", evaluate=track)
        control = ctx.new_model()
        steps = cfg.control_steps or ctx.train_cfg.steps
        ctx.train(control, task.sampler([cfg.control_concept]), phase="control", evaluate=track,
                  train_cfg=dataclasses.replace(ctx.train_cfg, steps=steps))
        for m in (mixture, control):
            m.eval()
        acc = {name: {str(n): {} for n in cells} for name in CONCEPT_SETS}
        ref = {f"{r}_{name}": {str(n): {} for n in cells} for r in REFERENCES for name in CONCEPT_SETS[:2]}
        for n, ks in cells.items():
            for k in ks:
                ids = prompts(id_concepts, n, k, 100 * n + k)  # control: the same prompts
                ood = prompts(ood_concepts, n, k, 50_000 + 100 * n + k)
                acc["in_distribution"][str(n)][str(k)] = accuracy(mixture, ids)
                acc["control"][str(n)][str(k)] = accuracy(control, ids)
                acc["out_of_distribution"][str(n)][str(k)] = accuracy(mixture, ood)
                for name, exs in zip(CONCEPT_SETS, (ids, ood)):
                    for r, predict in REFERENCES.items():
                        hits = [pool[p] == e.answer for p, e in zip(predict(task, exs, n, id_concepts), exs)]
                        ref[f"{r}_{name}"][str(n)][str(k)] = proportion(hits, 1 / len(pool))
        kmax = str(max(cells[longest]))
        results = {name: acc[name][str(longest)][kmax] for name in CONCEPT_SETS}
        results["in_distribution_k0"] = acc["in_distribution"][str(longest)]["0"] if "0" in acc[
            "in_distribution"][str(longest)] else None
        results = {k: v for k, v in results.items() if v is not None}
        return {"accuracy": acc, "results": results, "reference": ref, "cells": {str(n): ks for n, ks in cells.items()},
                "control_concept": cfg.control_concept, "delimiter": task.delimiter,
                "reference_gain": reference_gain, "targets": targets(acc, cells, reference_gain),
                "zero_shot_wins": zero_shot_wins(acc)}

    def summary(self, report: dict) -> str:
        """One table per concept set and Bayes reference (rows example_len, columns k: accuracy), the chance level,
        the targets with their figures and the zero-shot comparison."""
        acc = report["accuracy"]
        ks = sorted({int(k) for row in acc["in_distribution"].values() for k in row})
        out = []
        tables = {**{f"{name} accuracy — {report['architecture']}": acc[name] for name in CONCEPT_SETS},
                  **{f"Bayes reference {r}": t for r, t in report.get("reference", {}).items()}}
        for title, table in tables.items():
            rows = [[n] + [table[n][str(k)]["acc"] if str(k) in table[n] else None for k in ks] for n in table]
            out.append(format_table(["example_len"] + [f"k={k}" for k in ks], rows, title=f"ginc {title}"))
        chance = next(iter(report["results"].values()))["chance"]
        if "reference_gain" in report:
            out.append(f"world: delimiter={report.get('delimiter')}; document-Bayes gain with k (largest k − k=0): "
                       + ", ".join(f"len {n} {g:+.3f}" for n, g in report["reference_gain"].items())
                       + "; the model's: " + ", ".join(f"len {n} {g:+.3f}"
                                                      for n, g in report["targets"]["gain"].items()))
        t = report["targets"]
        out.append(f"chance = {chance:.3f}; " + format_checks(t))
        wins = report["zero_shot_wins"]
        out.append(f"zero-shot beats few-shot (non-overlapping 95% CIs) in {len(wins)} setting(s)"
                   + (": " + "; ".join(f"{w['concepts']} len {w['example_len']} k={w['k']}" for w in wins[:6])
                      if wins else ""))
        return "\n\n".join(out)

    def plots(self, run_dir: str, report: dict) -> None:
        """ginc_accuracy.png: accuracy vs k per example length, one panel per concept set."""
        from minitf.experiments.bayes.plots import plot_accuracy

        plot_accuracy(run_dir, report)


def targets(acc: dict, cells: dict, reference_gain: dict) -> dict:
    """The checks. ``gain[n]`` = in-distribution acc(largest k) − acc(k = 0) per example length
    (needs k = 0); ``grows_with_k``: at example lengths 2 and 3 (``ICL_LENGTHS``, those run) the
    gain is ≥ half of ``reference_gain[n]`` (the document-Bayes gain), that reference gain is
    > 0, and the two 95% intervals do not overlap; ``grows_with_length`` = acc(longest, k*) −
    acc(shortest, k*) > 0 at the largest k all lengths share; ``ood_far_below``: OOD accuracy
    below in-distribution at the longest length and its largest k (intervals not overlapping);
    ``control_no_gain``: the single-concept control's gain with k is below half the reference
    gain at every length of ``grows_with_k``."""
    ind, lens = acc["in_distribution"], sorted(cells)
    gain = {str(n): ind[str(n)][str(max(cells[n]))]["acc"] - ind[str(n)]["0"]["acc"]
            for n in lens if "0" in ind[str(n)]}
    shared = max(set.intersection(*(set(cells[n]) for n in lens)))
    longest, kmax = str(lens[-1]), str(max(cells[lens[-1]]))
    ctrl = acc["control"][longest]
    icl_lens = [str(n) for n in lens if n in ICL_LENGTHS and str(n) in gain] or [str(n) for n in lens[:2]
                                                                                   if str(n) in gain]
    control_gain = {n: acc["control"][n][str(max(cells[int(n)]))]["acc"] - acc["control"][n]["0"]["acc"]
                    for n in icl_lens}

    def clear_gain(n):
        hi, lo = ind[n][str(max(cells[int(n)]))], ind[n]["0"]
        return (reference_gain.get(n, 0) > 0 and gain[n] >= GAIN_FRACTION * reference_gain[n]
                and hi["ci95"][0] > lo["ci95"][1])

    ood = acc["out_of_distribution"][longest][kmax]
    out = {"gain": gain, "icl_lengths": [int(n) for n in icl_lens],
           "length_gain": ind[longest][str(shared)]["acc"] - ind[str(lens[0])][str(shared)]["acc"],
           "length_gain_k": shared,
           "ood_gap": ind[longest][kmax]["acc"] - ood["acc"],
           "control_acc": ctrl[kmax]["acc"], "control_gain": ctrl[kmax]["acc"] - ctrl["0"]["acc"] if "0" in ctrl
           else None, "control_gain_icl": control_gain, "chance": ctrl[kmax]["chance"]}
    out["pass"] = {"grows_with_k": bool(icl_lens) and all(clear_gain(n) for n in icl_lens),
                   "grows_with_length": out["length_gain"] > 0,
                   "ood_far_below": ood["ci95"][1] < ind[longest][kmax]["ci95"][0],
                   "control_no_gain": bool(icl_lens) and all(
                       control_gain[n] < GAIN_FRACTION * max(reference_gain.get(n, 0), 0) or
                       control_gain[n] <= 0 for n in icl_lens)}
    return out


def zero_shot_wins(acc: dict) -> list[dict]:
    """``[{"concepts", "example_len", "k", "acc_k0", "acc_k"}]``: every cell with k ≥ 1 whose 95%
    interval lies wholly below the k = 0 interval of the same concepts and example length."""
    out = []
    for name, by_len in acc.items():
        for n, row in by_len.items():
            if "0" not in row:
                continue
            zero = row["0"]
            for k, r in row.items():
                if k != "0" and r["ci95"][1] < zero["ci95"][0]:
                    out.append({"concepts": name, "example_len": int(n), "k": int(k), "acc_k0": zero["acc"],
                                "acc_k": r["acc"]})
    return out
