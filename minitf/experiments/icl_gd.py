"""``icl_gd``: does one layer of linear self-attention learn one step of gradient descent?

von Oswald et al. 2023: a single softmax-free linear self-attention layer trained on in-context
linear regression (d = 10, 10 context points) implements one GD step from w = 0 on the context's
squared loss. Tokens here concatenate each point, ``e_i = (x_i, y_i)`` (width d + 1), followed by
the query ``(x_q, 0)``; the model (``attention=linear``, 1 layer, no MLP, no LayerNorm, no
positions, linear read-in/read-out) predicts y_q at the query's position, the only scored one.

The report compares it on ``eval_prompts`` fresh prompts with one GD step whose step size is
fitted in closed form (``minitf.baselines.fit_gd_step_size``) on 10,000 fresh prompts:
``gd_equivalence = {"pred_rel_diff": ‖p_model − p_gd‖ / ‖p_gd‖ (relative L2 over prompts),
"sensitivity_cosine": mean over prompts of cos(∂p_model/∂x_q, ŵ_gd)}`` (``ŵ_gd`` is GD's
∂p/∂x_q), plus every learner's error/d at k = 10. ``--set depth_sweep=1,2,3,4`` also trains
softmax transformers of those depths (``depth_model_config``; phases ``depth<L>``) and reports
``depth_sweep[L] = {"spd_gd", "spd_least_squares", "err", "nearer_to"}`` (Akyürek et al. 2023's
squared prediction difference, per d). Targets (issue #22): cosine ≥ 0.99 and
prediction difference ≤ 5%. Sources: von Oswald et al. 2023; Akyürek et al. 2023.
"""
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from minitf import baselines
from minitf.config import ModelConfig, TrainConfig
from minitf.data import Batch, Vocab
from minitf.experiments.base import Experiment, RunContext
from minitf.model import Transformer
from minitf.report import format_table
from toy_tasks.regression import RegressionTask

GD_FIT_PROMPTS = 10_000


@dataclass
class ICLGDSettings:
    eval_prompts: int = 1000  # fresh prompts for gd_equivalence and the errors
    depth_sweep: str = ""  # e.g. "1,2,3,4": also train softmax transformers of these depths (Akyürek)
    depth_steps: int = 2000  # training steps of each depth_sweep model

    def depths(self) -> list[int]:
        return [int(x) for x in self.depth_sweep.split(",") if x.strip()]

    def validate(self):
        if self.eval_prompts < 2:
            raise ValueError(f"eval_prompts must be >= 2 (got {self.eval_prompts})")
        try:
            depths = self.depths()
        except ValueError:
            raise ValueError(f"depth_sweep must be comma-separated layer counts like 1,2,3,4 "
                             f"(got {self.depth_sweep!r})") from None
        if any(n < 1 for n in depths) or len(set(depths)) != len(depths):
            raise ValueError(f"depth_sweep needs distinct layer counts >= 1 (got {self.depth_sweep!r})")
        if self.depth_steps < 1:
            raise ValueError(f"depth_steps must be >= 1 (got {self.depth_steps})")
        return self


def depth_model_config(task, n_layers: int) -> ModelConfig:
    """The depth sweep's softmax transformer: pre-LN, d_model 64, 4 heads, GELU MLP 256."""
    d = task.d + 1
    return ModelConfig(n_layers=n_layers, d_model=64, n_heads=4, d_head=16, d_mlp=256, vocab_size=1,
                       n_ctx=task.prompt_len, positional="none", d_input=d, init_std=0.05)


def spd(p: np.ndarray, q: np.ndarray, d: int) -> float:
    """Akyürek et al. 2023's squared prediction difference, mean over prompts, divided by d."""
    return float(np.mean((p - q) ** 2) / d)


def concat_tokens(xs: np.ndarray, ys: np.ndarray) -> torch.Tensor:
    """``xs (n, P, d)``, ``ys (n, P)`` → float32 ``(n, P, d + 1)``: tokens ``(x_i, y_i)`` for the
    first P − 1 points and the query ``(x_P, 0)`` last."""
    tokens = np.concatenate([xs, ys[..., None]], axis=-1)
    tokens[:, -1, -1] = 0.0
    return torch.from_numpy(tokens).float()


def to_batch(xs: np.ndarray, ys: np.ndarray) -> Batch:
    """A Batch scoring only the query's y (the last position)."""
    inputs = concat_tokens(xs, ys)
    targets, mask = torch.zeros(inputs.shape[:2]), torch.zeros(inputs.shape[:2])
    targets[:, -1] = torch.from_numpy(ys[:, -1]).float()
    mask[:, -1] = 1.0
    return Batch(inputs, targets, mask)


def gd_equivalence(model, batch: dict, lr: float) -> dict:
    """Relative L2 prediction difference and mean sensitivity cosine of ``model`` vs one GD step."""
    xs, ys = batch["xs"], batch["ys"]
    inputs = concat_tokens(xs, ys).requires_grad_()
    pred = model(inputs)[:, -1, 0]
    (grad,) = torch.autograd.grad(pred.sum(), inputs)
    sens = grad[:, -1, :-1].double().numpy()  # ∂p/∂x_q per prompt (prompts are independent)
    p_model = pred.detach().double().numpy()
    w_gd = baselines.gd_one_step_w(xs[:, :-1], ys[:, :-1], lr)
    p_gd = np.einsum("nd,nd->n", w_gd, xs[:, -1])
    cos = (sens * w_gd).sum(1) / (np.linalg.norm(sens, axis=1) * np.linalg.norm(w_gd, axis=1) + 1e-12)
    return {"pred_rel_diff": float(np.linalg.norm(p_model - p_gd) / np.linalg.norm(p_gd)),
            "sensitivity_cosine": float(cos.mean()), "gd_step_size": lr}


class ICLGDExperiment(Experiment):
    name = "icl_gd"
    description = "one linear self-attention layer vs one step of gradient descent (von Oswald et al. 2023)"
    task_cls = RegressionTask
    config_cls = ICLGDSettings

    def default_task(self):
        return RegressionTask(d=10, n_points=11)

    def default_model(self, task) -> ModelConfig:
        d = task.d + 1
        # 4 heads × 8 in d_model 32: with one head in d_model = d + 1 (von Oswald's width) training
        # stalled at sensitivity cosine ≈ 0.83 from random init although the GD layer is a minimum
        # it stays at when started there; the wider layer reaches GD (docs/regression.md).
        return ModelConfig(n_layers=1, d_model=32, n_heads=4, d_head=8, d_mlp=0, vocab_size=1, n_ctx=task.prompt_len,
                           positional="none", layer_norm=False, attention="linear", d_input=d, init_std=0.1)

    def default_train(self) -> TrainConfig:
        return TrainConfig(steps=6000, batch_size=1024, lr=3e-3, warmup=100, weight_decay=0.0, grad_clip=0.0,
                           eval_every=500, checkpoint_every=1000, log_every=50)

    def vocab(self, task) -> Vocab:
        return Vocab([])

    def max_seq_len(self, task) -> int:
        return task.prompt_len + 1

    def run(self, ctx: RunContext) -> dict:
        task = ctx.task
        fit = task.sample(ctx.eval_rng(1), GD_FIT_PROMPTS)
        k = task.prompt_len - 1
        lr = baselines.fit_gd_step_size(fit["xs"][:, :k], fit["ys"][:, :k], fit["xs"][:, k], fit["ys"][:, k])
        small = task.sample(ctx.eval_rng(2), 256)

        def evaluate(model, step):
            with torch.enable_grad():
                return gd_equivalence(model, small, lr)

        def sample(rng, n):
            b = task.sample(rng, n)
            return to_batch(b["xs"], b["ys"])

        model = ctx.new_model()
        ctx.train(model, sample, evaluate=evaluate)
        model.eval()
        batch = task.sample(ctx.eval_rng(), ctx.config.eval_prompts)
        xs, ys, d = batch["xs"], batch["ys"], task.d
        with torch.no_grad():
            p_model = model(concat_tokens(xs, ys))[:, -1, 0].double().numpy()
        preds = {"model": p_model,
                 "gd_one_step": baselines.gd_one_step(xs[:, :k], ys[:, :k], xs[:, k], lr),
                 "least_squares": baselines.least_squares(xs[:, :k], ys[:, :k], xs[:, k]),
                 "averaging": baselines.averaging(xs[:, :k], ys[:, :k], xs[:, k])}
        errors = {name: baselines.curve_from_squared_errors(((p - ys[:, k]) ** 2)[:, None], d)[0]
                  for name, p in preds.items()}
        report = {"gd_equivalence": gd_equivalence(model, batch, lr), "errors_at_k": errors, "k": k, "d": d,
                  "eval_prompts": ctx.config.eval_prompts}
        if ctx.config.depths():
            report["depth_sweep"] = self.depth_sweep(ctx, sample, batch, preds)
        return report

    def depth_sweep(self, ctx: RunContext, sample, batch: dict, preds: dict) -> dict:
        """Per depth: SPD to one GD step and to least squares, and error/d, at the query."""
        task, k, d = ctx.task, ctx.task.prompt_len - 1, ctx.task.d
        train_cfg = dataclasses.replace(ctx.train_cfg, steps=ctx.config.depth_steps, batch_size=256, lr=2e-3,
                                        checkpoint_every=ctx.config.depth_steps)
        out = {}
        for n_layers in ctx.config.depths():
            torch.manual_seed(ctx.train_cfg.seed)
            model = Transformer(depth_model_config(task, n_layers)).to(ctx.train_cfg.device)
            ctx.train(model, sample, phase=f"depth{n_layers}", train_cfg=train_cfg)
            model.eval()
            with torch.no_grad():
                p = model(concat_tokens(batch["xs"], batch["ys"]).to(ctx.train_cfg.device))[:, -1, 0]
            p = p.double().cpu().numpy()
            out[n_layers] = {"spd_gd": spd(p, preds["gd_one_step"], d), "spd_least_squares": spd(p, preds["least_squares"], d),
                             "err": spd(p, batch["ys"][:, k], d)}
            out[n_layers]["nearer_to"] = ("gd_one_step" if out[n_layers]["spd_gd"] < out[n_layers]["spd_least_squares"]
                                          else "least_squares")
        return out

    def summary(self, report: dict) -> str:
        g = report["gd_equivalence"]
        rows = [[name, e["err"], f"[{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}]"] for name, e in report["errors_at_k"].items()]
        return "\n".join([format_table(["learner", f"error/d at k={report['k']}", "95% CI"], rows,
                                       title=f"icl_gd — {report['architecture']}"),
                          f"vs one GD step (η = {g['gd_step_size']:.3f}): prediction rel. diff {g['pred_rel_diff']:.3f} "
                          f"(target ≤ 0.05), sensitivity cosine {g['sensitivity_cosine']:.4f} (target ≥ 0.99)"]
                         + ([format_table(["softmax layers", "SPD to GD", "SPD to least squares", "error/d", "nearer to"],
                                          [[n, r["spd_gd"], r["spd_least_squares"], r["err"], r["nearer_to"]]
                                           for n, r in report["depth_sweep"].items()], title="depth sweep (per d)")]
                            if report.get("depth_sweep") else []))
