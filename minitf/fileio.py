"""Atomic file writes: a reader never sees a half-written artifact.

Write to a temporary file in the same folder, fsync, then os.replace — rename is atomic
on POSIX within one filesystem, so a crash leaves either the old file or the new one.
"""
import json
import os
import tempfile

TMP_PREFIX = ".tmp-"


def atomic_write_bytes(path, data: bytes) -> None:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path, data) -> None:
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
