"""The bursty experiment's sweep pictures: the ICL/IWL phase diagram and the flipped-label follow rate."""
import numpy as np

from minitf.report import save_figure, subplots


def plot_phase_diagram(out: str, grid: list[dict]) -> None:
    """Write ``out/phase_diagram.png``: two heatmaps, ICL and IWL accuracy in [0, 1] (rows p_bursty,
    columns n_classes). ``grid``: ``sweep.json`` rows, each with ``p_bursty``, ``n_classes``,
    ``icl`` and ``iwl``; raises ``StopIteration`` if a grid combination has no row."""
    ps, ks = sorted({g["p_bursty"] for g in grid}), sorted({g["n_classes"] for g in grid})
    fig, axes = subplots(1, 2, figsize=(9, 3.8))
    for ax, key in zip(axes, ("icl", "iwl")):
        arr = np.array([[next(g[key] for g in grid if g["p_bursty"] == p and g["n_classes"] == k) for k in ks]
                        for p in ps])
        im = ax.imshow(arr, vmin=0, vmax=1, origin="lower", cmap="magma")
        ax.set_xticks(range(len(ks)), [str(k) for k in ks])
        ax.set_yticks(range(len(ps)), [str(p) for p in ps])
        ax.set_xlabel("n_classes K")
        ax.set_ylabel("p_bursty")
        ax.set_title(f"{key.upper()} accuracy")
        for (i, j), v in np.ndenumerate(arr):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="c")
        fig.colorbar(im, ax=ax, fraction=0.046)
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
