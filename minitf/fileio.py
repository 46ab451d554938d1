"""Atomic file writes: a reader never sees a half-written artifact.

Write to a temporary file in the same folder, fsync, then os.replace — rename is atomic
on POSIX within one filesystem, so a crash leaves either the old file or the new one.
"""
import json
import os
import signal
import tempfile

from minitf.artifacts import TMP_PREFIX

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


def atomic_write_json(path, data) -> None:
    """``data`` as indented, key-sorted JSON, written atomically."""
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def remove_stale_temp_files(folder) -> list[str]:
    """Delete temp files a killed process left behind; returns their names."""
    removed = []
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(TMP_PREFIX):
                os.unlink(os.path.join(folder, name))
                removed.append(name)
    return removed
