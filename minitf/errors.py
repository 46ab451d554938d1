"""The errors minitf raises for bad input. Each message names the problem and the fix.

They subclass ValueError / FileNotFoundError so callers can catch them generically; the
CLI turns any of them into one line on stderr and exit code 2.
"""


class MinitfError(Exception):
    """Base of every user-facing error."""


class ConfigError(MinitfError, ValueError):
    """A config field is unknown, ill-typed or inconsistent."""


class InputError(MinitfError, ValueError):
    """Tokens passed to a model are out of vocab, too long, or of the wrong dtype/shape."""


class CheckpointError(MinitfError, ValueError):
    """A checkpoint is corrupt, truncated or does not match the config it is loaded with."""


class CheckpointNotFoundError(MinitfError, FileNotFoundError):
    """A run folder or one of its files does not exist."""


class RunExistsError(MinitfError, ValueError):
    """A new run would overwrite an existing run folder."""


class NonFiniteLossError(MinitfError, RuntimeError):
    """Training produced NaN/inf; the message names the step and the last good checkpoint."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; carries the run folder so the CLI can print the resume command."""

    def __init__(self, run_dir: str):
        super().__init__(run_dir)
        self.run_dir = run_dir
