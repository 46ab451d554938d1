"""The ``ginc`` experiment's PNG: in-context accuracy against k per example length."""
from minitf.report import save_figure, subplots

TITLES = {"in_distribution": "in-distribution concepts", "out_of_distribution": "OOD concepts",
          "control": "control (one pretraining concept)"}


def plot_accuracy(run_dir: str, report: dict) -> str:
    """Write ``run_dir/ginc_accuracy.png``: one panel per concept set of ``report["accuracy"]``,
    a line per example length, accuracy in [0, 1] against k (symlog x axis, so k = 0 shows)
    with 95% intervals; dashed, same colour: the document-Bayes reference on the same prompts;
    dotted: chance. Returns the path."""
    acc = {name: report["accuracy"][name] for name in TITLES if name in report["accuracy"]}  # report.json sorts keys
    fig, axes = subplots(1, len(acc), figsize=(4.2 * len(acc), 3.6), sharey=True)
    refs = report.get("reference", {})
    for ax, (name, by_len) in zip(axes, acc.items()):
        # the document-Bayes reference of the same prompts (the control answers the in-distribution ones)
        ref = refs.get(f"document_{'in_distribution' if name == 'control' else name}", {})
        for i, (n, row) in enumerate(by_len.items()):
            ks = sorted(row, key=int)
            vals = [row[k]["acc"] for k in ks]
            err = [[v - row[k]["ci95"][0] for v, k in zip(vals, ks)], [row[k]["ci95"][1] - v for v, k in zip(vals, ks)]]
            ax.errorbar([int(k) for k in ks], vals, yerr=err, marker="o", capsize=2, color=f"C{i}",
                        label=f"example length {n}")
            if n in ref:
                rk = sorted(ref[n], key=int)
                ax.plot([int(k) for k in rk], [ref[n][k]["acc"] for k in rk], linestyle="--", color=f"C{i}",
                        alpha=0.6, label="document-Bayes reference" if i == 0 else None)
            chance = row[ks[0]]["chance"]
        ax.axhline(chance, linestyle=":", color="grey", label="chance")
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(-0.3, 1.3 * max(int(k) for row in by_len.values() for k in row))
        ax.set_xlabel("k (in-context examples)")
        ax.set_title(TITLES.get(name, name))
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=8)
    return save_figure(fig, run_dir, "ginc_accuracy.png")
