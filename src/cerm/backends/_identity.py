"""What identifies a local backend's weights in its description: content hashes, not paths."""

from __future__ import annotations

import hashlib
from pathlib import Path


def folder_digest(folder: Path) -> str | None:
    """SHA-256 over the relative paths and contents of every file under ``folder`` (None when it is not a folder):
    identifies an adapter by what it is, not by where it lies."""
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode("utf-8") + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()
