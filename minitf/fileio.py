"""Files minitf writes: atomically, as strict JSON, one writer per run folder; and the
standard streams as they may really be.

- Atomic writes: a temporary file in the same folder, fsync, then os.replace — rename is atomic
  on POSIX within one filesystem, so a crash leaves either the old file or the new one.
- JSON: every JSON file (and JSON line) minitf writes goes through ``to_json``, which writes a
  non-finite float (NaN, ±inf) as ``null``, so any strict parser reads it.
- One writer per run folder: ``lock_run_folder`` holds an exclusive ``fcntl.flock`` on the
  folder's lock file for as long as the process writes there; the kernel drops it when the
  process ends, however it ends (SIGKILL included), so a killed run never leaves it stuck.
- Streams: ``isatty`` is False for a missing stream (``2>&-``) or one without ``isatty``.
"""
import json
import math
import os
import signal
import tempfile

import numpy as np

from minitf.artifacts import LOCK, TMP_PREFIX
from minitf.errors import MinitfError

# Fault injection for the crash-safety tests: SIGKILL this process halfway through the N-th
# atomic write (temp file half written, nothing replaced yet). Unset in normal use.
_KILL_AT_WRITE = int(os.environ.get("MINITF_KILL_AT_WRITE", "0"))
_writes = 0


def _file_mode() -> int:
    """The mode open() would give a new file (0o666 minus the umask). mkstemp makes 0600 files,
    which would hide a run's weights and report from collaborators on a shared machine."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_MODE = _file_mode()


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, os.replace),
    with the ordinary new-file permissions (0666 minus the umask)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
    try:
        os.fchmod(fd, _MODE)
        with os.fdopen(fd, "wb") as f:
            _maybe_die(f, data)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _maybe_die(f, data: bytes) -> None:
    global _writes
    _writes += 1
    if _KILL_AT_WRITE and _writes == _KILL_AT_WRITE:
        f.write(data[: len(data) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def finite_or_none(data):
    """``data`` with every non-finite float (NaN, inf, -inf) replaced by None, in nested dicts,
    lists and tuples (tuples become lists, as JSON has them); numpy scalars become Python numbers."""
    if isinstance(data, np.generic):
        data = data.item()
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_or_none(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_none(v) for v in data]
    return data


def to_json(data, **kwargs) -> str:
    """``json.dumps(data, **kwargs)`` that a strict parser reads: non-finite floats become
    ``null`` (``finite_or_none``) and ``allow_nan=False`` guarantees no bare ``NaN`` /
    ``Infinity`` is ever written. The one JSON encoder of every file minitf writes."""
    return json.dumps(finite_or_none(data), allow_nan=False, **kwargs)


def atomic_write_json(path, data) -> None:
    """``data`` as indented, key-sorted strict JSON (``to_json``), written atomically."""
    atomic_write_bytes(path, (to_json(data, indent=2, sort_keys=True) + "\n").encode())


def append_json_line(path, row: dict) -> None:
    """Append ``row`` as one strict-JSON line (``to_json``) to ``path`` (a ``.jsonl`` log)."""
    with open(path, "a") as f:
        f.write(to_json(row) + "\n")


def remove_stale_temp_files(folder) -> list[str]:
    """Delete temp files a killed process left behind; returns their names."""
    removed = []
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(TMP_PREFIX):
                os.unlink(os.path.join(folder, name))
                removed.append(name)
    return removed


# -- one writer per run folder ---------------------------------------------------------------------
class RunBusyError(MinitfError, RuntimeError):
    """Another process is writing this run folder (it holds the folder's lock)."""


_held: dict[str, int] = {}  # real path of a run folder -> the open lock-file descriptor this process holds


def lock_run_folder(folder) -> None:
    """Make this process the run folder's one writer: an exclusive, non-blocking ``flock`` on
    ``folder/.lock`` (created if missing; the folder must exist), held until ``unlock_run_folder``
    or the process ends (the kernel releases it on any exit, SIGKILL included). Taking a lock this
    process already holds is a no-op. Raises ``RunBusyError`` (changing nothing) when another
    process holds it. Without ``fcntl`` (Windows) it does nothing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover — no flock on this platform
        return
    key = os.path.realpath(folder)
    if key in _held:
        return
    path = os.path.join(folder, LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, _MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            holder = os.read(fd, 200).decode(errors="replace").strip()
        except OSError:
            holder = ""
        os.close(fd)
        who = f" (process {holder})" if holder else ""
        raise RunBusyError(f"{folder} is being written by another minitf process{who}; wait until it ends or "
                           f"stop it (Ctrl-C writes a checkpoint), then continue with --resume {folder}") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _held[key] = fd


def unlock_run_folder(folder) -> None:
    """Release this process's lock on ``folder`` (no-op if it holds none). The lock file stays."""
    fd = _held.pop(os.path.realpath(folder), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock


# -- standard streams --------------------------------------------------------------------------------
def isatty(stream) -> bool:
    """Whether ``stream`` is a terminal; False for None (a closed stream, ``2>&-``), a stream
    without ``isatty``, or one whose ``isatty`` fails (closed)."""
    try:
        return bool(stream.isatty())
    except Exception:  # noqa: BLE001 — None, no isatty, a closed file, an odd wrapper
        return False


def writable(stream) -> bool:
    """Whether ``stream`` looks writable: not None and has ``write``."""
    return stream is not None and callable(getattr(stream, "write", None))
