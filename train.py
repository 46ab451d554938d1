"""minitf command line: ``python train.py [EXPERIMENT] [options]``.

A thin layer over ``minitf.runs``: it parses arguments and turns every user error into one
line on stderr with exit code 2. No logic of its own lives here.
"""
import argparse
import sys

from minitf.errors import MinitfError, RunInterrupted


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
                        help="run the experiment's parameter grid (bursty: p_bursty x n_classes) into --out")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace minitf's files in an existing run folder (your own files there stay)")
    parser.add_argument("--show-config", action="store_true",
                        help="print every --set key with its value for this experiment, then exit")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.skip_nonfinite is not None:
        args.overrides.append(f"skip_nonfinite={args.skip_nonfinite}")
    if args.facts is not None:
        args.overrides.append(f"facts_file={args.facts}")
    try:
        from minitf import runs

        common = dict(out=args.out, seed=args.seed, overrides=args.overrides, device=args.device,
                      overwrite=args.overwrite)
        modes = [m for m in ("resume", "seeds", "ensemble", "sweep", "show_config") if getattr(args, m)]
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
        elif args.sweep:
            runs.run_sweep(args.experiment, **common)
        elif args.ensemble is not None:
            runs.run_ensemble(args.experiment, args.ensemble, **common)
        elif args.seeds is not None:
            if args.seeds < 2:
                raise UsageError(f"--seeds needs N >= 2 (got {args.seeds}); for one seed use --seed")
            runs.run_seeds(args.experiment, args.seeds, **common)
        else:
            runs.run(args.experiment, **common)
    except MinitfError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # a library's own ValueError deep inside: still one line, not a traceback
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except RunInterrupted as stop:
        print(f"\ninterrupted; continue with:\n  python train.py --resume {stop.run_dir}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted before a run folder was made; nothing to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
