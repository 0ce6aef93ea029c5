"""``cerm train curate | teach | sft | grpo | slot | pipeline``: the training stages from a YAML config plus overrides.

A config file holds one section per stage (``curate:``, ``teach:``, ``sft:``, ``grpo:``); a file without any of those
keys is the settings of the one stage named on the command line. ``pipeline`` runs every stage the file has, in
order. Overrides: ``--set key=value`` (``--set sft.max_steps=2`` in a pipeline), or any setting as a flag
(``--max-steps 2``, ``--no-use-cpu``...); values are read as YAML (``2``, ``true``, ``[q_proj, v_proj]``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cerm.cli import EXIT_OK, InputError

STAGES = ("curate", "teach", "sft", "grpo", "slot")
#: The stages ``pipeline`` runs in order (the slot model is trained on its own: ``cerm train slot``).
PIPELINE = ("curate", "teach", "sft", "grpo")

EPILOG = """\
examples:
  cerm train sft --config examples/train_demo_judge.yaml --set max_steps=2
  cerm train pipeline --config examples/train_demo_judge.yaml          # teach, then sft
  cerm train sft --config my.yaml --learning-rate 2e-5 --finetuning qlora
  cerm train grpo --config examples/train_grpo_demo.yaml --max-steps 4
  cerm train slot --config examples/train_slot.yaml --max-steps 20       # ESFP-RM slot model
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a judge: curate, teach, sft, grpo, slot (or pipeline: every stage of the config)",
        description="Run a training stage from a YAML config file, with overrides.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("stage", choices=[*STAGES, "pipeline"], help="the stage to run (pipeline: all in the file)")
    parser.add_argument("--config", "-c", required=True, help="YAML config file")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a setting (repeatable); in a pipeline prefix the stage: sft.max_steps=2",
    )
    parser.add_argument("--dry-run", action="store_true", help="validate the config and print it; train nothing")
    parser.set_defaults(func=run, accepts_extra_flags=True)


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as exc:
        raise InputError("cerm train reads YAML configs: pip install pyyaml (or 'ce-rm[train]')") from exc
    return yaml


def _value(raw: str) -> Any:
    loaded = _yaml().safe_load(raw)
    return raw if loaded is None and raw.strip() not in ("null", "~", "") else loaded


def parse_flag_overrides(extra: list[str]) -> list[tuple[str, Any]]:
    """``--max-steps 2 --use-cpu --no-gradient-checkpointing --set-like=x`` -> ``[("max_steps", 2), ...]``."""
    pairs: list[tuple[str, Any]] = []
    i = 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--") or token == "--":
            raise InputError(f"unexpected argument {token!r}: settings are given as --name value or --set name=value")
        name, sep, inline = token[2:].partition("=")
        key = name.replace("-", "_")
        if sep:
            pairs.append((key, _value(inline)))
            i += 1
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            pairs.append((key, _value(extra[i + 1])))
            i += 2
        elif key.startswith("no_"):
            pairs.append((key[3:], False))
            i += 1
        else:
            pairs.append((key, True))
            i += 1
    return pairs


def _set_override(sections: dict[str, dict[str, Any]], stage: str, key: str, value: Any) -> None:
    head, dot, rest = key.partition(".")
    if dot and head in STAGES:
        sections.setdefault(head, {})
        target, key = sections[head], rest
    elif stage == "pipeline":
        raise InputError(f"in a pipeline, prefix the override with its stage (e.g. sft.{key}={value!r})")
    else:
        target = sections.setdefault(stage, {})
    # Dotted keys reach into mappings (trainer_args.optim=adamw_torch).
    *parents, leaf = key.split(".")
    for parent in parents:
        nested = target.setdefault(parent, {})
        if not isinstance(nested, dict):
            raise InputError(f"cannot set {key!r}: {parent!r} is not a mapping")
        target = nested
    target[leaf] = value


def load_sections(path: str, stage: str, overrides: list[tuple[str, Any]]) -> dict[str, dict[str, Any]]:
    """The stage sections of a config file, overrides applied."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"config file not found: {path}")
    try:
        loaded = _yaml().safe_load(file.read_text(encoding="utf-8")) or {}
    except Exception as exc:  # yaml.YAMLError, with its line and column
        raise InputError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise InputError(f"{path}: the config must be a mapping")
    if any(key in STAGES for key in loaded):
        stray = sorted(key for key in loaded if key not in STAGES)
        if stray:
            raise InputError(f"{path}: top-level keys must be stage sections {list(STAGES)}; unexpected: {stray}")
        sections = {key: dict(value or {}) for key, value in loaded.items()}
    elif stage == "pipeline":
        raise InputError(f"{path}: a pipeline config needs stage sections ({', '.join(STAGES)})")
    else:
        sections = {stage: dict(loaded)}
    for key, value in overrides:
        _set_override(sections, stage, key, value)
    return sections


def run(args: argparse.Namespace) -> int:
    from cerm.training._trainer import Trainer, stage_config

    overrides = []
    for pair in args.overrides:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--set expects KEY=VALUE, got {pair!r}")
        overrides.append((key.strip(), _value(raw)))
    overrides.extend(parse_flag_overrides(getattr(args, "extra_flags", [])))
    sections = load_sections(args.config, args.stage, overrides)
    stages = [s for s in PIPELINE if s in sections] if args.stage == "pipeline" else [args.stage]
    if args.stage != "pipeline" and args.stage not in sections:
        raise InputError(f"{args.config} has no {args.stage!r} section")
    configs = [(stage, stage_config(stage, sections[stage])) for stage in stages]  # all validated before any runs
    if args.dry_run:
        for stage, config in configs:
            print(json.dumps({"stage": stage, "config": _plain(config)}, default=str))
        return EXIT_OK
    trainer = Trainer()
    for stage, config in configs:
        result = trainer.run(stage, config)
        print(json.dumps({"stage": stage, "result": _plain(result)}, default=str))
        sys.stdout.flush()
    return EXIT_OK


def _plain(value: Any) -> Any:
    """A result or config as JSON-friendly data (dataclasses become dicts; the manifest stays out of the summary)."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = dataclasses.asdict(value)
        data.pop("manifest", None)
        data.pop("log_history", None)
        return data
    return value
