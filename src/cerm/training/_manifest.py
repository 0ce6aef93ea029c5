"""``manifest.json`` of a training stage's output directory: the config that made it and content hashes of its inputs
and outputs, so a later stage (or a person) can tell exactly what a directory holds and where it came from."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cerm._version import __version__

MANIFEST_FILE = "manifest.json"


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (read in chunks)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def config_dict(config: Any) -> dict[str, Any]:
    """A stage config as plain JSON values (a dataclass through :func:`dataclasses.asdict`)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return dict(config)


def write_manifest(
    out_dir: Path,
    *,
    stage: str,
    config: Any,
    inputs: Mapping[str, str],
    outputs: list[str],
    stats: Mapping[str, Any],
) -> Path:
    """Write ``out_dir/manifest.json``: stage, cerm version, config, input hashes (given), output file hashes
    (computed here from the named files in ``out_dir``) and the stage's statistics."""
    manifest = {
        "stage": stage,
        "cerm_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config_dict(config),
        "inputs": dict(inputs),
        "outputs": {name: file_digest(out_dir / name) for name in outputs},
        "stats": dict(stats),
    }
    path = out_dir / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest of a stage directory (a dict); FileNotFoundError when the directory has none."""
    data = json.loads((Path(out_dir) / MANIFEST_FILE).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{out_dir}/{MANIFEST_FILE} is not a JSON object")
    return data
