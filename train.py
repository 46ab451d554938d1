"""minitf command line: ``python train.py [EXPERIMENT] [options]``.

A thin layer over ``minitf.experiments``: it parses arguments and turns every user error
into one line on stderr with exit code 2. No logic of its own lives here.
"""
import argparse
import os
import sys

from minitf.checkpoint import read_run_config
from minitf.errors import MinitfError
from minitf.experiments import DEFAULT_EXPERIMENT, EXPERIMENTS, run_experiment
from minitf.experiments.base import run_seeds
from minitf.experiments.ensemble_runs import run_ensemble


def parse_args(argv):
    listing = "\n".join(f"  {name:<12} {exp.description}" for name, exp in EXPERIMENTS.items())
    parser = argparse.ArgumentParser(
        description="Train tiny transformers on toy tasks and report what they learned.",
        epilog=f"experiments:\n{listing}\n\nexample: python train.py induction --set n_layers=1 --seed 1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", nargs="?", default=None,
                        help=f"which experiment to run (default: {DEFAULT_EXPERIMENT})")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument("--out", default=None, help="write the run folder at exactly this path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (model, train or task), e.g. --set steps=500")
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
                        help="replace an existing run folder instead of refusing")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.skip_nonfinite is not None:
        args.overrides.append(f"skip_nonfinite={args.skip_nonfinite}")
    try:
        name = args.experiment
        if args.resume:
            if args.overrides or args.seed is not None or args.out:
                raise MinitfErrorCLI("--resume continues a run with its saved config; "
                                     "drop --set/--seed/--out")
            name = name or read_run_config(args.resume).get("experiment")
        name = name or DEFAULT_EXPERIMENT
        if name not in EXPERIMENTS:
            raise MinitfErrorCLI(f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)}")
        experiment = EXPERIMENTS[name]
        if args.sweep:
            if not hasattr(experiment, "sweep"):
                raise MinitfErrorCLI(f"experiment {name!r} has no --sweep; bursty has one")
            experiment.sweep(args.out or os.path.join("runs", name, "sweep"), args.seed, args.overrides,
                             args.overwrite)
        elif args.ensemble is not None:
            if args.resume or args.seeds is not None:
                raise MinitfErrorCLI("--ensemble cannot be combined with --resume or --seeds; "
                                     "resume a member with --resume OUT/seed<N>")
            run_ensemble(experiment, args.ensemble, out=args.out, seed=args.seed, overrides=args.overrides,
                         device=args.device, overwrite=args.overwrite)
        elif args.seeds is not None:
            if args.seeds < 2 or args.resume:
                raise MinitfErrorCLI("--seeds needs N >= 2 and cannot be combined with --resume")
            run_seeds(experiment, args.seeds, out=args.out, seed=args.seed, overrides=args.overrides,
                      device=args.device, overwrite=args.overwrite)
        else:
            run_experiment(experiment, out=args.out, seed=args.seed, overrides=args.overrides,
                           device=args.device, overwrite=args.overwrite, resume=args.resume)
    except MinitfError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with --resume RUN_DIR", file=sys.stderr)
        return 130
    return 0


class MinitfErrorCLI(MinitfError, ValueError):
    """A command-line usage error."""


if __name__ == "__main__":
    sys.exit(main())
