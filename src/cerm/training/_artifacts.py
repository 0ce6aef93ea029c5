"""The output directory of a training stage: what it holds, and the manifest that says what made it.

Layout of an SFT (or GRPO) output directory::

    <output_dir>/
        adapter_config.json, adapter_model.safetensors     (LoRA / QLoRA)   or   config.json, model*.safetensors
        tokenizer files (the template the model was trained with)
        cerm_training.json     the manifest: stage, base model, config, sha256 of every data file, example counts
        checkpoints/checkpoint-N/    TRL's checkpoints (resume from here after a kill)

``Judge("<output_dir>")`` loads it directly: a full model as is, an adapter on top of the base model the manifest
names (see :func:`resolve_trained_dir`). Pure Python: no torch, so the backends can ask cheaply.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST = "cerm_training.json"
CHECKPOINTS = "checkpoints"
_ADAPTER_CONFIG = "adapter_config.json"
_VERSIONED = ("cerm", "ce-rm", "torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets")


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def config_sha256(config: Mapping[str, Any]) -> str:
    """A hash of a config as canonical JSON (sorted keys), so two runs with the same settings share it."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def data_record(path: str | os.PathLike[str], rows: int | None = None) -> dict[str, Any]:
    """How a data file enters a manifest: its path, its sha256 and (when known) how many rows were read."""
    record: dict[str, Any] = {"path": str(path), "sha256": file_sha256(path)}
    if rows is not None:
        record["rows"] = rows
    return record


def _versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def write_manifest(
    output_dir: str | os.PathLike[str],
    *,
    stage: str,
    base_model: str,
    finetuning: str,
    config: Mapping[str, Any],
    data: Sequence[Mapping[str, Any]],
    stats: Mapping[str, Any],
) -> dict[str, Any]:
    """Write ``cerm_training.json`` into ``output_dir`` and return what was written."""
    manifest: dict[str, Any] = {
        "format": 1,
        "stage": stage,
        "base_model": base_model,
        "finetuning": finetuning,
        "config": dict(config),
        "config_sha256": config_sha256(config),
        "data": [dict(d) for d in data],
        "stats": dict(stats),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "versions": _versions(),
    }
    path = Path(output_dir) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return manifest


def read_manifest(output_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of a training output directory, or None when the folder has none."""
    path = Path(output_dir) / MANIFEST
    if not path.is_file():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def is_adapter_dir(path: str | os.PathLike[str]) -> bool:
    folder = Path(path)
    return (folder / _ADAPTER_CONFIG).is_file() and not (folder / "config.json").is_file()


def resolve_trained_dir(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """For an adapter folder (a cerm output directory or any peft adapter), ``(base model, adapter folder)``; None for
    anything else (a full model folder loads as is).

    The base model is the one cerm's manifest records (``"demo"`` for the embedded model, so the folder stays
    portable across machines), else the adapter's own ``base_model_name_or_path``.
    """
    folder = Path(path)
    if not folder.is_dir() or not is_adapter_dir(folder):
        return None
    manifest = read_manifest(folder)
    base = manifest.get("base_model") if manifest else None
    if not base:
        adapter_config = json.loads((folder / _ADAPTER_CONFIG).read_text(encoding="utf-8"))
        base = adapter_config.get("base_model_name_or_path")
    if not base:
        return None
    return str(base), str(folder)
