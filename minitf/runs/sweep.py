"""Sweeps: every cell of a grid × every seed, each an ordinary run folder — the one mechanism
behind ``--seeds N``, ``--sweep`` (the experiment's ``sweep_grid``) and ``--grid key=v1,v2``.

Layout of ``out``: ``<cell>/`` per cell (``<cell>/seed<N>/`` with several seeds, plus the cell's
merged ``report.json``); with no grid, ``seed<N>/`` and the merged ``report.json`` (``--seeds``).
A grid also gets ``sweep.json`` (``minitf.runs.summary.write_sweep``), ``sweep-<key>.png`` per
axis and the experiment's own ``sweep_plot``.

1. Every run is planned before any starts (``minitf.runs.grid.plan``): its configs validated (a
   bad cell raises one error naming it, nothing written), and its folder classified — finished
   (report.json: skipped), unfinished (same settings: resumed from its checkpoint) or new. So an
   interrupted sweep, restarted with the same command, skips what finished and resumes the rest.
2. The runs execute through ``minitf.runs.workers.run_cell``: in this process with one worker,
   as Ray tasks with ``--workers W`` > 1 or ``--ray-address``. Same seed ⇒ same report as the
   run started alone.
3. A failing run prints one line naming its cell; the others finish; then ``SweepError``.
4. Each finished cell's seeds are merged (``minitf.runs.seeds``), and a grid summarized
   (``minitf.runs.summary``).
"""
import os
import time

from minitf.errors import ConfigError, MinitfError, RunInterrupted
from minitf.experiments.base import Experiment
from minitf.runs import distributed, grid as grids, summary
from minitf.runs.grid import cell_name, cells  # noqa: F401 — the names sweep callers used
from minitf.runs.seeds import cell_summary, summarize_seeds
from minitf.runs.single import read_report, resolve_experiment
from minitf.runs.workers import RunSpec, error_line, require_ray, run_inline, run_on_ray


class SweepError(MinitfError, RuntimeError):
    """Some runs of a sweep failed (each was reported on its own line); the others finished."""


class SweepInterrupted(RunInterrupted):
    """Ctrl-C during a sweep: re-running the same command continues it (``run_dir`` is ``out``)."""


def run_seeds(experiment: Experiment | str | None, n_seeds: int, out: str | None = None, seed: int | None = None,
              overrides=(), device: str | None = None, overwrite: bool = False, workers: int = 1,
              ray_address: str | None = None) -> dict:
    """Run seeds seed..seed+n-1 into ``out/seed<N>`` (every folder checked before the first
    run starts; finished seeds of an interrupted call are skipped, unfinished ones resumed) and
    write ``out/report.json``: each result record's mean over seeds with a 95% t-interval over
    seeds and the per-seed values (``minitf.runs.seeds.summarize_seeds``). ``workers`` > 1 or
    ``ray_address`` run the seeds as Ray tasks (``sweep`` of a grid of one cell, which raises
    what it documents)."""
    return sweep(experiment, {}, n_seeds, out, seed, overrides, device, overwrite, workers, ray_address)["report"]


def run_sweep(experiment: Experiment | str | None, out: str | None = None, seed: int | None = None,
              overrides=(), device: str | None = None, overwrite: bool = False, grid: dict | None = None,
              seeds: int = 1, workers: int = 1, ray_address: str | None = None) -> dict:
    """Run every cell of ``grid`` (default: the experiment's ``sweep_grid``, i.e. ``--sweep``) for
    ``seeds`` seeds from ``seed`` into ``out`` (default ``runs/<name>/sweep``); returns the
    ``sweep.json`` dict, whose ``grid`` rows are each cell's settings plus its ``results``
    accuracies in [0, 1] (means over seeds). Raises ``ConfigError`` for an empty grid, and what
    ``sweep`` raises."""
    exp, _ = resolve_experiment(experiment)
    if grid is None:
        if not exp.sweep_grid:
            raise ConfigError(f"experiment {exp.name!r} has no --sweep grid (its sweep_grid is empty); "
                              "give the grid with --grid KEY=V1,V2")
        grid = exp.sweep_grid
    if not grid:
        raise ConfigError("the sweep grid is empty; give it with --grid KEY=V1,V2")
    experiment = experiment if isinstance(experiment, Experiment) else (experiment or exp.name)
    return sweep(experiment, grid, seeds, out, seed, overrides, device, overwrite, workers, ray_address)


def sweep(experiment, grid: dict, n_seeds: int, out: str | None, seed: int | None, overrides=(),
          device: str | None = None, overwrite: bool = False, workers: int = 1,
          ray_address: str | None = None) -> dict:
    """Plan, run and summarize ``cells(grid) × seeds`` (module docstring). Returns ``sweep.json``'s
    dict (no file for an empty grid) with ``report``: the merged seeds report when the grid is
    empty. Raises, before anything is written: ``ConfigError`` (bad grid key, a cell's bad
    config naming the cell, workers < 1, Ray missing for ``workers`` > 1 / ``ray_address``, under
    torchrun), ``RunExistsError`` (``out`` is a file; a run folder holds other settings); after
    the runs, ``SweepError`` if any failed; ``SweepInterrupted`` on Ctrl-C."""
    distributed.refuse("a sweep")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1 (got {workers})")
    on_ray = workers > 1 or bool(ray_address)
    if on_ray:
        require_ray()
    planned = grids.plan(experiment, grid, n_seeds, out, seed, overrides, device, overwrite, on_ray)
    exp, out, seeds, plan, threads = planned.experiment, planned.out, planned.seeds, planned.cells, planned.threads

    todo = [spec for _, _, runs in plan for spec, status in runs if status != "done"]
    done = {spec.label: folder_report(spec.run_dir) for _, _, runs in plan for spec, status in runs if status == "done"}
    n_resume = sum(spec.resume for spec in todo)
    print(f"sweep into {out}: {len(plan)} cell(s) x {n_seeds} seed(s) = {len(done) + len(todo)} runs; "
          f"{len(done)} finished (skipped), {n_resume} to resume, {len(todo) - n_resume} to start; "
          + (f"{workers} Ray worker(s) x {threads} thread(s)" if on_ray else "one at a time in this process"),
          flush=True)
    failed, total, t0 = [], len(done) + len(todo), time.perf_counter()

    def on_result(spec: RunSpec, result: dict) -> None:
        count = len(done) + len(failed) + 1
        if "error" in result:
            failed.append({"run": spec.label, "run_dir": spec.run_dir, "error": result["error"]})
            print(f"[{count}/{total}] {spec.label}: FAILED: {result['error']}", flush=True)
            return
        report = done[spec.label] = result["report"]
        accs = summary.result_means(cell_summary([report]))
        print(f"[{count}/{total}] {spec.label}: " + "  ".join(f"{k} {v:.3f}" for k, v in accs.items())
              + f"  ({report.get('wall_s', 0):.1f} s)", flush=True)

    try:
        if on_ray and todo:
            run_on_ray(todo, workers, ray_address, device, on_result)
        else:
            run_inline(todo, on_result)
    except KeyboardInterrupt:  # RunInterrupted (in this process) or Ctrl-C while Ray runs
        raise SweepInterrupted(out) from None

    finished, merged = [], None
    for cell, settings, runs in plan:
        reports = [done[spec.label] for spec, _ in runs if spec.label in done]
        if len(reports) < len(runs):
            continue
        cell_dir = os.path.join(out, grids.cell_name(cell)) if grid else out
        if n_seeds > 1 or not grid:
            merged = summarize_seeds(exp, reports, cell_dir, quiet=bool(grid))
        finished.append({"name": grids.cell_name(cell), "cell": cell, "settings": settings,
                         "runs": [r["run_dir"] for r in reports], "summary": cell_summary(reports)})
    result = {"report": merged}
    if grid:
        result.update(summary.write_sweep(out, grid, seeds, finished, failed))
        summary.print_table(finished, n_seeds)
        summary.plot_axes(out, grid, finished)
        if not failed and exp.plots_sweep(grid):
            try:
                exp.sweep_plot(out, result["grid"])
            except Exception as e:  # noqa: BLE001 — a plot must not lose the finished sweep's summary
                print(f"warning: {exp.name}'s sweep plot failed ({error_line(e)}); sweep.json is written")
        print(f"\n{len(finished)} cell(s) in {out} (sweep.json, sweep-<key>.png); wall {time.perf_counter() - t0:.1f} s")
    if failed:
        raise SweepError(f"{len(failed)} of {len(done) + len(failed)} runs failed ({', '.join(f['run'] for f in failed)}"
                         f"); the others finished. Fix the cause and re-run the same command: finished runs are "
                         "skipped, unfinished ones resume")
    return result


def folder_report(run_dir: str) -> dict:
    """The report.json of a finished run folder."""
    return read_report(run_dir)
