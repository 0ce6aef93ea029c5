"""The output directory of a model-training stage (SFT, later GRPO), and how ``Judge(...)`` loads it.

Layout::

    <output_dir>/
        adapter_config.json, adapter_model.safetensors     (LoRA / QLoRA)   or   config.json, model*.safetensors
        tokenizer files and chat_template.jinja (the template the model was trained with)
        manifest.json          stage, config, sha256 of every input (data files, base model name), statistics
        checkpoints/checkpoint-N/    TRL's checkpoints (resume from here after a kill)

The manifest is the one every training stage writes (:mod:`cerm.training._manifest`); for a model stage it also
names the base model (``"base_model"`` in its stats: ``"demo"`` for the embedded model, so a folder stays portable).
``Judge("<output_dir>")`` loads a full model as is and an adapter on top of that base (:func:`resolve_trained_dir`).
Pure Python: no torch, so the backends can ask cheaply.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cerm.training._manifest import MANIFEST_FILE

CHECKPOINTS = "checkpoints"
ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_dir(path: str | os.PathLike[str]) -> bool:
    """A folder holding a peft adapter and no full model."""
    folder = Path(path)
    return (folder / ADAPTER_CONFIG).is_file() and not (folder / "config.json").is_file()


def model_files(output_dir: str | os.PathLike[str]) -> list[str]:
    """The weight and config files of a trained folder (what its manifest hashes as outputs)."""
    folder = Path(output_dir)
    names = [
        p.name
        for p in folder.iterdir()
        if p.is_file() and (p.suffix == ".safetensors" or p.name in (ADAPTER_CONFIG, "config.json"))
    ]
    return sorted(names)


def resolve_trained_dir(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """For an adapter folder (a cerm output directory or any peft adapter), ``(base model, adapter folder)``; None
    for anything else (a full model folder loads as is).

    The base model is the one cerm's manifest records, else the adapter's own ``base_model_name_or_path``.
    """
    folder = Path(path)
    if not folder.is_dir() or not is_adapter_dir(folder):
        return None
    base: str | None = None
    manifest = folder / MANIFEST_FILE
    if manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        stats = data.get("stats") if isinstance(data, dict) else None
        if isinstance(stats, dict) and isinstance(stats.get("base_model"), str):
            base = stats["base_model"]
    if not base:
        adapter_config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        base = adapter_config.get("base_model_name_or_path")
    if not base:
        return None
    return str(base), str(folder)
