"""Where a sweep's runs execute: each run is one call of ``run_cell``, in this process
(one worker, no cluster) or as a Ray task (``--workers W`` > 1 or ``--ray-address``).

``run_cell`` is the whole of a run, through the ordinary runner (``folder.prepare_run`` /
``create`` / ``execute``, or ``open_for_resume`` / ``begin_resume`` for an unfinished one), so a
run on Ray writes the same run folder, and the same report, as the run started alone. Ray
starts a local cluster on this machine (``ray.init``) or joins an existing one by address;
at most W runs are in flight at once, each with ``threads`` torch intra-op threads.
"""
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch

from minitf import checkpoint
from minitf.errors import ConfigError, MinitfError
from minitf.runs import folder
from minitf.runs.single import execute, read_report, resolve_experiment

SWEEP_EXTRA = 'pip install -e ".[sweep]"'


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep (a cell at one seed), everything a worker needs to run it.

    experiment: a command-line reference (resolved in the worker) or an Experiment instance;
    overrides: the ``--set`` strings including the cell's settings; resume: continue the
    unfinished run in ``run_dir`` instead of starting it; cwd: the driver's working directory
    (relative paths resolve there); threads: torch intra-op threads (None: leave as is).
    """

    label: str
    experiment: object
    run_dir: str
    seed: int
    overrides: tuple
    device: str | None
    overwrite: bool
    resume: bool
    cwd: str
    threads: int | None = None


def run_cell(spec: RunSpec) -> dict:
    """Run ``spec`` to its report in this process: ``{"report": dict}``, or ``{"error": line}``
    (one line: the exception type and message, and for an unexpected error where it was raised).
    KeyboardInterrupt (``RunInterrupted``) propagates."""
    if spec.threads:
        torch.set_num_threads(spec.threads)
    if os.path.isdir(spec.cwd) and os.getcwd() != spec.cwd:
        os.chdir(spec.cwd)
    try:
        experiment, ref = resolve_experiment(spec.experiment)
        if spec.resume:
            saved = checkpoint.read_run_config(spec.run_dir)
            ctx = folder.open_for_resume(spec.run_dir, experiment, ref, saved, spec.device)
            if ctx is None:  # finished meanwhile (another driver on the same folder)
                return {"report": read_report(spec.run_dir)}
            folder.begin_resume(ctx)
        else:
            ctx = folder.create(folder.prepare_run(experiment, spec.run_dir, spec.seed, list(spec.overrides),
                                                   spec.device, spec.overwrite), ref)
        return {"report": execute(ctx, quiet=True)}
    except Exception as e:  # noqa: BLE001 — one run's failure must not stop the others
        return {"error": error_line(e)}


def error_line(e: BaseException) -> str:
    """``Type: message`` on one line (≤ 400 characters); for an exception that is not one of
    minitf's own, also the file and line where it was raised."""
    text = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
    where = ""
    if not isinstance(e, MinitfError) and e.__traceback__ is not None:
        frame = traceback.extract_tb(e.__traceback__)[-1]
        where = f" (at {os.path.basename(frame.filename)}:{frame.lineno})"
    return f"{type(e).__name__}: {text}"[:400] + where


def run_inline(specs: list[RunSpec], on_result: Callable[[RunSpec, dict], None]) -> None:
    """Run ``specs`` one after another in this process, calling ``on_result(spec, result)`` after each."""
    for spec in specs:
        on_result(spec, run_cell(spec))


def require_ray():
    """The ``ray`` module; ``ConfigError`` naming the extra to install when it is missing."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"running a sweep with --workers > 1 or --ray-address needs Ray: {SWEEP_EXTRA} "
                          "(or pip install 'ray>=2.40'); with --workers 1 it runs in this process") from None
    return ray


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Raise ``ConfigError`` at once when a ``host:port`` / ``ray://host:port`` address refuses a
    TCP connection (Ray itself retries for minutes); other forms ("auto", ...) pass unchecked."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError(f"cannot reach the Ray cluster at --ray-address {address} ({e.strerror or e}); start it "
                          "(ray start --head) or fix the address (docs/scaling.md)") from None


def run_on_ray(specs: list[RunSpec], workers: int, address: str | None, device: str | None,
               on_result: Callable[[RunSpec, dict], None]) -> str:
    """Run ``specs`` as Ray tasks, at most ``workers`` at once, calling ``on_result`` as each
    finishes (in completion order); returns where it ran ("local Ray" or the address). Starts
    a local Ray with ``workers × threads`` CPUs unless Ray is already initialised in this process
    or ``address`` names a cluster to join. A task that dies (its worker killed) gives an
    ``{"error": ...}`` result. Ctrl-C cancels the runs in flight (their checkpoints stay) and
    re-raises KeyboardInterrupt. Raises ``ConfigError`` when Ray cannot start or the cluster
    cannot be joined, and for ``device="cuda"`` on a cluster without GPUs."""
    ray = require_ray()
    threads = max((s.threads or 1) for s in specs) if specs else 1
    started = not ray.is_initialized()
    where = address or "local Ray"
    if started:
        if address:
            check_reachable(address)
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers * threads, include_dashboard=False, log_to_driver=False)
        except Exception as e:  # noqa: BLE001 — Ray raises several types for an unreachable cluster
            raise ConfigError(f"cannot start or join Ray ({where}): {error_line(e)}; check the address "
                              "(docs/scaling.md), or run without --ray-address for a local Ray") from None
    pending: dict = {}
    try:
        resources = {"num_cpus": threads}
        if device == "cuda":
            gpus = ray.cluster_resources().get("GPU", 0)
            if not gpus:
                raise ConfigError(f"--device cuda but the Ray cluster ({where}) has no GPU")
            resources["num_gpus"] = min(1.0, gpus / workers)
        task = ray.remote(max_retries=0, **resources)(run_cell)
        queue = list(specs)
        while queue or pending:
            while queue and len(pending) < workers:
                spec = queue.pop(0)
                pending[task.remote(spec)] = spec
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                spec = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as e:  # the worker process died (killed, out of memory, ...)
                    result = {"error": f"Ray worker failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}"}
                on_result(spec, result)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()
    return where
