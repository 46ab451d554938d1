"""minitf command line: ``python train.py [EXPERIMENT] [options]``.

A thin layer over ``minitf.runs``: it parses arguments and turns every user error into one
line on stderr with exit code 2. No logic of its own lives here. Under ``torchrun`` every
process runs this same command (one model, data-parallel; process 0 writes and prints).
"""
import argparse
import os
import shlex
import sys

# OpenMP threads sleep while they wait for each other unless you say otherwise (set before torch is
# imported). Beside another busy process, spinning threads cost ≈ 3× (47k → 17k tok/s on the
# headline model, 2 threads), sleeping ones ≈ 2× (44k → 23k); alone, sleeping costs ≈ 7%
# (bench/threads_load.py, docs/performance.md "Threads on a busy machine").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from minitf.errors import MinitfError, RunInterrupted  # noqa: E402


class UsageError(MinitfError, ValueError):
    """A command-line usage error."""


def parse_args(argv):
    from minitf.experiments import DEFAULT_EXPERIMENT, EXPERIMENTS

    listing = "\n".join(f"  {name:<12} {exp.description}" for name, exp in EXPERIMENTS.items())
    parser = argparse.ArgumentParser(
        description="Train tiny transformers on toy tasks and report what they learned.",
        epilog=f"experiments:\n{listing}\n  module.path:Class  your own Experiment subclass (docs/experiments.md)"
               "\n\nexample: python train.py induction --set n_layers=1 --seed 1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", nargs="?", default=None,
                        help=f"which experiment to run (default: {DEFAULT_EXPERIMENT}), or module.path:Class")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument("--out", default=None, help="write the run folder at exactly this path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (model, train, task or experiment), e.g. --set steps=500")
    parser.add_argument("--facts", default=None, metavar="FILE.json",
                        help="headline: run its conditions on your own relational facts (docs/headline.md)")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR",
                        help="continue an interrupted run with its own saved experiment and config")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    parser.add_argument("--skip-nonfinite", type=int, default=None, metavar="N",
                        help="skip (no update) up to N steps whose loss or gradients are NaN/inf before stopping")
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="run N seeds (from --seed) and report means with 95%% intervals over seeds")
    parser.add_argument("--ensemble", type=int, default=None, metavar="K",
                        help="train K seeds (from --seed) in one process as one batched computation; "
                             "one run folder per member, plus their mean")
    parser.add_argument("--sweep", action="store_true",
                        help="run the experiment's own parameter grid into --out (bursty: p_bursty x n_classes; "
                             "regression: n_tasks)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="sweep a config key over values (repeat for more keys: every combination); with "
                             "--seeds N each cell runs N seeds. Restarting the same command skips finished runs")
    parser.add_argument("--workers", type=int, default=1, metavar="W",
                        help="run a sweep's (--seeds/--sweep/--grid) runs as W Ray tasks at once, one torch thread "
                             "each unless OMP_NUM_THREADS is set (needs the sweep extra: pip install -e \".[sweep]\")")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="run the sweep on an existing Ray cluster (e.g. ray://head:10001 or auto) instead of a "
                             "local Ray started on this machine")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace minitf's files in an existing run folder (your own files there stay)")
    parser.add_argument("--show-config", action="store_true",
                        help="print every --set key with its value for this experiment, then exit")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.skip_nonfinite is not None:
        args.overrides.append(f"skip_nonfinite={args.skip_nonfinite}")
    try:
        if args.facts is not None:
            args.overrides.append(f"facts_file={args.facts}")
            check_takes_facts(args.experiment, args.resume)
        from minitf import runs

        common = dict(out=args.out, seed=args.seed, overrides=args.overrides, device=args.device,
                      overwrite=args.overwrite)
        sweeping = bool(args.sweep or args.grid or args.seeds is not None)
        modes = [m for m in ("resume", "ensemble", "show_config") if getattr(args, m)] + (
            ["seeds" if args.seeds is not None else "sweep" if args.sweep else "grid"] if sweeping else [])
        if args.sweep and args.grid:
            raise UsageError("--sweep runs the experiment's own grid and --grid gives one: use one of them")
        if (args.workers != 1 or args.ray_address) and not sweeping:
            raise UsageError("--workers and --ray-address run the runs of a sweep; add --seeds N, --grid KEY=V1,V2 "
                             "or --sweep (one model on several processes: torchrun, docs/scaling.md)")
        if len(modes) > 1:
            raise UsageError(f"--{modes[0].replace('_', '-')} and --{modes[1].replace('_', '-')} cannot be "
                             "combined; resume a member of a multi-seed run with --resume OUT/seed<N>")
        if args.resume:
            if args.overrides or args.seed is not None or args.out or args.overwrite:
                raise UsageError("--resume continues a run with its saved config; drop --set/--facts/--seed/--out/"
                                 "--overwrite")
            runs.run(args.experiment, resume=args.resume, device=args.device)
        elif args.show_config:
            print(runs.show_config(args.experiment, args.overrides, args.seed, args.device))
        elif args.ensemble is not None:
            runs.run_ensemble(args.experiment, args.ensemble, **common)
        elif sweeping:
            if args.seeds is not None and args.seeds < 2:
                raise UsageError(f"--seeds needs N >= 2 (got {args.seeds}); for one seed use --seed")
            scale = dict(workers=args.workers, ray_address=args.ray_address)
            if args.sweep or args.grid:
                from minitf.runs.grid import parse_grid

                runs.run_sweep(args.experiment, **common, grid=parse_grid(args.grid) if args.grid else None,
                               seeds=args.seeds or 1, **scale)
            else:
                runs.run_seeds(args.experiment, args.seeds, **common, **scale)
        else:
            runs.run(args.experiment, **common)
    except MinitfError as e:
        say(f"error: {e}")
        return 2
    except ValueError as e:  # a library's own ValueError deep inside: still one line, not a traceback
        say(f"error: {type(e).__name__}: {e}")
        return 2
    except RunInterrupted as stop:
        from minitf.runs.sweep import SweepInterrupted

        again = (" ".join(shlex.quote(a) for a in ["python", "train.py", *(sys.argv[1:] if argv is None else argv)])
                 if isinstance(stop, SweepInterrupted) else f"python train.py --resume {stop.run_dir}")
        print(f"\ninterrupted; continue with:\n  {again}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted before a run folder was made; nothing to resume", file=sys.stderr)
        return 130
    finally:
        close_process_group()
    return 0


def check_takes_facts(experiment, resume) -> None:
    """``--facts`` sets the task's ``facts_file``: refuse it, in the user's terms, for an
    experiment whose task reads no facts file (``--resume`` refuses it on its own)."""
    import dataclasses

    from minitf import runs
    from minitf.experiments import EXPERIMENTS

    if resume:
        return
    exp, _ = runs.resolve_experiment(experiment)
    if "facts_file" not in {f.name for f in dataclasses.fields(exp.task_cls)}:
        takes = [n for n, e in EXPERIMENTS.items() if "facts_file" in {f.name for f in dataclasses.fields(e.task_cls)}]
        raise UsageError(f"experiment {exp.name!r} takes no facts file; --facts is for {', '.join(takes)} "
                         "(docs/headline.md#your-own-facts): drop --facts or choose one of them")


def say(line: str) -> None:
    """An error line on stderr; under torchrun from process 0 only (every process meets the same error).
    The others wait a few seconds before exiting: torchrun stops every process when the first one
    exits, and process 0 must have printed by then."""
    import os
    import time

    if os.environ.get("RANK", "0") == "0":
        print(line, file=sys.stderr, flush=True)
    else:
        time.sleep(5)


def close_process_group() -> None:
    """Leave torchrun's process group, if this process joined one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class PipeSafe:
    """A standard stream that survives its reader going away (``python train.py --show-config |
    head``): on a broken pipe the stream's file descriptor is pointed at os.devnull and the
    command goes on quietly (a run still finishes). Everything else is the wrapped stream's."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._silence()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._silence()

    def _silence(self) -> None:
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        finally:
            os.close(devnull)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def guard_streams() -> None:
    """Standard streams as they may really be: a closed one (``2>&-``, ``>&-``, ``<&-``, a daemon)
    gets its descriptor back — onto the other output stream (said once, there) or os.devnull — so
    no file minitf opens can take descriptor 1 or 2 and receive stray output, and no write fails
    on a missing stream; stdout and stderr survive a closed pipe (``PipeSafe``)."""
    import os

    def is_open(fd):
        try:
            os.fstat(fd)
            return True
        except OSError:
            return False

    closed = [fd for fd in (0, 1, 2) if not is_open(fd)]
    notes = []
    for fd in closed:  # lowest first, so an os.open here cannot land on another closed one
        other = {1: 2, 2: 1}.get(fd)
        if other is not None and other not in closed:
            os.dup2(other, fd)
            notes.append(f"note: {('stdout', 'stderr')[fd - 1]} is closed; its messages go to "
                         f"{('stdout', 'stderr')[other - 1]}")
        else:
            target = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            if target != fd:
                os.dup2(target, fd)
                os.close(target)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = getattr(sys, name)
        if fd in closed or stream is None:
            stream = open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
        setattr(sys, name, PipeSafe(stream))
    if 0 in closed or sys.stdin is None:
        sys.stdin = open(0, closefd=False)
    for note in notes:
        print(note, file=sys.stdout if "go to stdout" in note else sys.stderr, flush=True)


if __name__ == "__main__":
    guard_streams()
    sys.exit(main())
