"""The regression experiment's pictures: error/d curves over k, and the learning curve."""
import os

from minitf.report import plot_interval, save_figure, subplots

STYLES = {"model": dict(color="black", linewidth=2.2), "least_squares": dict(color="tab:blue"),
          "ridge": dict(color="tab:cyan", linestyle=":"), "knn": dict(color="tab:green"),
          "averaging": dict(color="tab:orange"), "gd_one_step": dict(color="tab:red"),
          "lasso": dict(color="tab:purple"), "dmmse": dict(color="tab:brown")}


def plot_curves(run_dir: str, report: dict, filename: str = "curves.png") -> str:
    """error/d (squared error / d) against k in-context examples, one line per learner of
    ``report["curves"]``, each with its 95% interval shaded in its colour."""
    fig, ax = subplots(figsize=(7, 4.5))
    for name, curve in report["curves"].items():
        ks = sorted(int(k) for k in curve)
        err = [curve[k]["err"] if k in curve else curve[str(k)]["err"] for k in ks]
        ci = [curve[k]["ci95"] if k in curve else curve[str(k)]["ci95"] for k in ks]
        plot_interval(ax, ks, err, [c[0] for c in ci], [c[1] for c in ci], style="band", label=name, markersize=3,
                      **STYLES.get(name, {}))
    ax.axvline(report["d"], color="grey", linestyle="--", linewidth=1)
    ax.annotate("k = d", (report["d"], 1.05), color="grey", fontsize=8)
    ax.set_xlabel("k = in-context examples before the query")
    ax.set_ylabel("squared error / d  (1 = predicting 0)")
    ax.set_ylim(0, 1.25)
    ax.set_title(f"in-context regression, d={report['d']}, {report['eval_prompts']} fresh prompts "
                 f"(curriculum={report['curriculum']})", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, run_dir, filename)


def plot_learning(run_dir: str, report: dict, filename: str = "learning.png", others: dict | None = None) -> str:
    """error/d at the last k against the training step (``others``: more ``{label: [(step, err)]}``)."""
    fig, ax = subplots(figsize=(7, 4))
    series = {f"curriculum={report['curriculum']}": report["learning_curve"], **(others or {})}
    for label, rows in series.items():
        ax.plot([s for s, _ in rows], [e for _, e in rows], marker="o", markersize=3, label=label)
    ax.axhline(report["threshold"], color="grey", linestyle="--", linewidth=1, label=f"threshold {report['threshold']}")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"squared error / d at k = {report['n_points'] - 1}")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    return save_figure(fig, run_dir, filename)


def compare_learning(run_dirs: list[str], out: str) -> str:
    """One picture of several regression runs' learning curves (e.g. ``curriculum=none`` vs
    ``dims``, same seeds and steps), labelled by seed and curriculum; written to ``out``."""
    import json

    reports = []
    for run_dir in run_dirs:
        with open(os.path.join(run_dir, "report.json")) as f:
            reports.append(json.load(f))
    first = reports[0]
    others = {f"curriculum={r['curriculum']} (seed {r['seed']})": r["learning_curve"] for r in reports[1:]}
    first = {**first, "curriculum": f"{first['curriculum']} (seed {first['seed']})"}
    return plot_learning(os.path.dirname(out) or ".", first, os.path.basename(out), others)


def task_diversity_rows(out: str) -> list[dict]:
    """One row per finished regression run under ``out`` (a ``--sweep`` folder), sorted by pool
    size M (0 = a fresh w per prompt, last): error/d at the last k of the model on pool and
    new tasks, ridge and dMMSE on new tasks, and the model's new-task error over ridge's."""
    import glob
    import json

    rows = []
    for path in glob.glob(os.path.join(out, "**", "report.json"), recursive=True):
        with open(path) as f:
            r = json.load(f)
        if r.get("experiment") != "regression" or "curves" not in r:
            continue
        if "task_diversity" in r:
            t = r["task_diversity"]
            rows.append({"n_tasks": t["n_tasks"], "model_pool": t["pool"]["model"]["err"],
                         "model_new": t["new"]["model"]["err"], "ridge_new": t["new"]["ridge"]["err"],
                         "dmmse_new": t["new"]["dmmse"]["err"], "new_over_ridge": t["new_over_ridge"],
                         "run_dir": os.path.dirname(path)})
        else:  # no pool: every prompt is a new task
            last = str(r["n_points"] - 1)
            model, ridge = r["curves"]["model"][last]["err"], r["curves"]["ridge"][last]["err"]
            rows.append({"n_tasks": 0, "model_pool": None, "model_new": model, "ridge_new": ridge,
                         "dmmse_new": None, "new_over_ridge": model / ridge if ridge > 0 else None,
                         "run_dir": os.path.dirname(path)})
    return sorted(rows, key=lambda row: (row["n_tasks"] == 0, row["n_tasks"]))


def plot_task_diversity(out: str, filename: str = "task_diversity.png") -> str | None:
    """Raventós et al. (2023)'s picture: error/d at the last k against the pool size M (log
    axis; M = 0, a fresh task per prompt, drawn as ∞ at the right) for the model on pool and on
    new tasks, ridge and dMMSE on new tasks. None when ``out`` holds no regression run."""
    rows = task_diversity_rows(out)
    if not rows:
        return None
    finite = [r["n_tasks"] for r in rows if r["n_tasks"]]
    inf_x = max(finite) * 8 if finite else 1
    xs = [r["n_tasks"] or inf_x for r in rows]
    fig, ax = subplots(figsize=(7, 4.5))
    for key, label, style in (("model_new", "model, new tasks", STYLES["model"]),
                              ("model_pool", "model, pool tasks", dict(color="grey", linestyle="--")),
                              ("ridge_new", "ridge, new tasks", STYLES["ridge"]),
                              ("dmmse_new", "dMMSE (pool prior), new tasks", STYLES["dmmse"])):
        pts = [(x, r[key]) for x, r in zip(xs, rows) if r[key] is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=4, label=label, **style)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(xs, [str(r["n_tasks"]) if r["n_tasks"] else "∞" for r in rows])
    ax.set_xlabel("pretraining tasks M (pool size)")
    ax.set_ylabel("squared error / d at the last k")
    ax.set_title("task diversity (Raventós et al. 2023)", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, out, filename)
