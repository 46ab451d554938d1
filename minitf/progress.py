"""What a training phase shows and how it stops: progress lines for logs (``Progress``), the
terminal bar (``progress_bar``), and Ctrl-C at the end of a step (``StopAtStepEnd``). Used by
``minitf.trainer.Trainer`` and the batched ensemble runner."""
import signal
import sys
import threading
import time

from tqdm import tqdm

from minitf.fileio import isatty


class Progress:
    """Where output is not a terminal (``> log``, nohup, a batch scheduler) tqdm stays silent:
    print the phase start, a progress line about every 10% of the steps (at most every 30 s),
    and each evaluation's numbers, so a log shows the run is alive."""

    def __init__(self, phase: str, total: int, start: int):
        self.enabled = not isatty(sys.stderr)  # also without a stderr (2>&-) or one lacking isatty
        self.phase, self.total, self.next_step = phase, total, start
        self.every = max(1, total // 10)
        self.last = time.perf_counter()
        if self.enabled:
            self._print(f"phase {phase}: steps {start}..{total}")

    def step(self, step: int, loss: float, rate: float) -> None:
        """Called at each logged step: print a line (step, loss in nats/token, tokens/s) once
        ~10% of the phase's steps, or 30 s, have passed since the last line; silent on a terminal."""
        if self.enabled and (step >= self.next_step + self.every or time.perf_counter() - self.last > 30):
            self.next_step, self.last = step, time.perf_counter()
            self._print(f"phase {self.phase}: step {step}/{self.total}  loss {loss:.4f}  {rate:,.0f} tok/s")

    def evaluation(self, step: int, results: dict) -> None:
        """Print the numeric values of an evaluation's ``results`` at ``step``; silent on a terminal."""
        if self.enabled:
            numbers = "  ".join(f"{k} {v:.4f}" for k, v in results.items() if isinstance(v, (int, float)))
            self._print(f"phase {self.phase}: eval at step {step}  {numbers}")

    @staticmethod
    def _print(line: str) -> None:
        print(line, flush=True)


def progress_bar(total: int, initial: int, desc: str, enabled: bool = True) -> tqdm:
    """A tqdm bar on stderr, shown only when stderr is a terminal (never on a closed stderr,
    ``2>&-``, nor on a stream without ``isatty``, where tqdm itself would fail)."""
    show = enabled and isatty(sys.stderr)
    return tqdm(total=total, initial=initial, desc=desc, disable=not show, leave=False,
                file=sys.stderr if show else None)


class StopAtStepEnd:
    """While training (main thread, single process), Ctrl-C (SIGINT) does not cut a step in half:
    it sets ``requested`` and the trainer stops at the end of the step, after writing a checkpoint
    (atomically), so ``--resume`` continues from there and equals an uninterrupted run. A second
    Ctrl-C stops at once (the last checkpoint stays). Elsewhere (a worker thread, torchrun) it
    changes nothing: Ctrl-C interrupts as usual."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ninterrupt: stopping at the end of this step after writing a checkpoint "
              "(Ctrl-C again to stop at once)", file=sys.stderr if sys.stderr is not None else sys.stdout, flush=True)

    def __enter__(self) -> "StopAtStepEnd":
        if self.enabled:
            try:
                self._previous = signal.signal(signal.SIGINT, self._handler)
            except ValueError:  # not the main thread of the main interpreter
                self.enabled = False
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
