"""Test helper: a folder's state, so "nothing changed on disk" is one equality."""
import os


def snapshot(folder) -> dict:
    """Every file under ``folder`` with its bytes and mtime: "nothing changed" means equal snapshots."""
    out = {}
    for dirpath, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, folder)] = (open(p, "rb").read(), os.stat(p).st_mtime_ns)
    return out
