"""``induction``: a 2-layer attention-only model on repeated random segments.

The smallest real experiment and the smoke test of the whole stack: after training, the
second repeat is predicted nearly perfectly (an induction head copies the token that
followed the earlier occurrence) while the first stays at chance (ln n_symbols).
Run the 1-layer control with ``--set n_layers=1``: one layer cannot form the circuit.
"""
from minitf.config import ModelConfig, TrainConfig
from minitf.data import collate
from minitf.evaluate import per_position_loss
from minitf.experiments.base import Experiment, RunContext
from minitf.report import format_table
from toy_tasks.induction import InductionTask

EVAL_SEQUENCES = 256


class InductionExperiment(Experiment):
    name = "induction"
    description = "induction heads on repeated random tokens (2-layer attention-only)"
    task_cls = InductionTask

    def default_model(self, task) -> ModelConfig:
        return ModelConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=0,
                           vocab_size=len(self.vocab(task)), n_ctx=task.seq_len - 1)

    def default_train(self) -> TrainConfig:
        return TrainConfig(steps=600, batch_size=32, lr=3e-3, warmup=50, eval_every=100)

    def max_seq_len(self, task) -> int:
        return task.seq_len

    def run(self, ctx: RunContext) -> dict:
        task = ctx.task
        eval_batch = collate(task.sample(ctx.eval_rng(), EVAL_SEQUENCES), ctx.vocab)

        def repeat_losses(model, step=None):
            losses = per_position_loss(model, eval_batch)
            # target index t predicts token t+1
            first = losses[[p - 1 for p in task.first_repeat()]].mean().item()
            second = losses[[p - 1 for p in task.second_repeat()]].mean().item()
            return {"loss_first_repeat": first, "loss_second_repeat": second}

        model = ctx.new_model()
        ctx.train(model, task.sample, evaluate=repeat_losses)
        model.eval()
        return repeat_losses(model)

    def summary(self, report: dict) -> str:
        first, second = report["loss_first_repeat"], report["loss_second_repeat"]
        rows = [["first repeat", first], ["second repeat", second],
                ["second / first", second / first if first else None]]
        return format_table(["tokens", "loss (nats/token)"], rows,
                            title=f"induction — {report['architecture']}")
