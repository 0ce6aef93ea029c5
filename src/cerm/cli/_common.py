"""Options and helpers shared by the sub-commands: judge construction, JSONL reading with precise errors, output."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from cerm._config import JudgeConfig
from cerm._jsonl import iter_json_lines
from cerm._judge import Judge
from cerm._types import Judgment
from cerm.cli import InputError


def add_judge_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("judge")
    group.add_argument(
        "--model",
        default="demo",
        help="model name or path; 'demo' is the embedded tiny demo judge (default), "
        "'PKU-ONELab/CE-RM-4B' the released CE-RM judge",
    )
    group.add_argument("--backend", default="hf", help="backend name (default: hf)")
    group.add_argument(
        "--backend-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra backend setting, repeatable (e.g. device=cpu, dtype=bfloat16, batch_size=16); "
        "values are parsed as JSON when possible",
    )
    group.add_argument("-k", type=int, default=1, help="test-time scaling: number of chains (default 1)")
    group.add_argument(
        "--scaling",
        choices=["chains", "evaluations", "grid"],
        default="chains",
        help="test-time scaling mode when k > 1 (default: chains)",
    )
    group.add_argument(
        "--max-new-tokens", type=int, default=None, help="token budget of both turns (overrides the two options below)"
    )
    group.add_argument("--criteria-max-new-tokens", type=int, default=1024)
    group.add_argument("--evaluation-max-new-tokens", type=int, default=2048)
    group.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    group.add_argument("--seed", type=int, default=None)
    group.add_argument(
        "--overlong",
        choices=["truncate", "unscorable"],
        default="truncate",
        help="what to do with responses longer than the model context",
    )
    group.add_argument(
        "--score-readout",
        choices=["parsed", "expected"],
        default="parsed",
        help="'expected': the expected score from the score tokens' probabilities (fewer ties; needs logprobs)",
    )
    group.add_argument(
        "--forced-readout",
        action="store_true",
        help="read a score after an explicit overall-score prefix where the judge did not close the format "
        "(marked as forced in the output)",
    )
    group.add_argument(
        "--criteria-cache", metavar="FILE", default=None, help="SQLite criteria cache file (reused across runs)"
    )


def _parse_backend_args(pairs: Sequence[str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--backend-arg expects KEY=VALUE, got {pair!r}")
        try:
            settings[key] = json.loads(raw)
        except json.JSONDecodeError:
            settings[key] = raw
    return settings


def config_from_args(args: argparse.Namespace) -> JudgeConfig:
    crit, evals = args.criteria_max_new_tokens, args.evaluation_max_new_tokens
    if args.max_new_tokens is not None:
        crit = evals = args.max_new_tokens
    return JudgeConfig(
        criteria_max_new_tokens=crit,
        evaluation_max_new_tokens=evals,
        temperature=args.temperature,
        k=args.k,
        scaling=args.scaling,
        seed=args.seed,
        overlong=args.overlong,
        score_readout=getattr(args, "score_readout", "parsed"),
        forced_readout=getattr(args, "forced_readout", False),
    )


def judge_from_args(args: argparse.Namespace) -> Judge:
    config = config_from_args(args)  # validate settings before the (slow) model load
    cache = getattr(args, "criteria_cache", None)
    return Judge(args.model, backend=args.backend, config=config, cache=cache, **_parse_backend_args(args.backend_arg))


def check_text(value: str, where: str) -> None:
    """Refuse strings that are not valid Unicode (lone surrogates from "\\ud800" escapes or undecodable argv bytes):
    the model cannot read them and the JSONL output could not be written."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{where} is not valid Unicode text (lone surrogate at position {exc.start})") from None


def read_jsonl(path: str, list_field: str, aliases: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Read and validate every line before any model work, so bad input fails fast with file:line in the message.

    Each line must be an object with a non-empty string ``query`` and a non-empty list of strings under
    ``list_field`` (or one of ``aliases``, normalised to ``list_field``). Blank lines are skipped.
    """
    if path == "-":
        lines = sys.stdin.read().splitlines()
        name = "<stdin>"
    else:
        file = Path(path)
        if not file.is_file():
            raise InputError(f"input file not found: {path}")
        lines = file.read_text(encoding="utf-8").splitlines()
        name = path
    rows: list[dict[str, Any]] = []
    for where, row in iter_json_lines(lines, name, InputError):
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
        for alias in aliases:
            if list_field not in row and alias in row:
                row[list_field] = row.pop(alias)
        query = row.get("query")
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"{where}: 'query' must be a non-empty string")
        check_text(query, f"{where}: 'query'")
        items = row.get(list_field)
        if not isinstance(items, list):
            raise InputError(f"{where}: '{list_field}' must be a list of strings")
        if not items:
            raise InputError(f"{where}: '{list_field}' is an empty list")
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise InputError(f"{where}: '{list_field}'[{i}] must be a string, got {type(item).__name__}")
            check_text(item, f"{where}: '{list_field}'[{i}]")
        rows.append(row)
    if not rows:
        raise InputError(f"{name}: no input rows")
    return rows


@contextmanager
def open_output(path: str | None) -> Iterator[IO[str]]:
    if path in (None, "-"):
        yield sys.stdout
        return
    assert path is not None
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        yield handle


def write_json_line(handle: IO[str], obj: Any) -> None:
    handle.write(json.dumps(obj, ensure_ascii=False) + "\n")
    handle.flush()  # a long run's output is usable while it is still going


def chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def add_io_options(parser: argparse.ArgumentParser, batch_help: str) -> None:
    group = parser.add_argument_group("input/output")
    group.add_argument("--input", "-i", metavar="FILE", help="JSONL input ('-' for stdin)")
    group.add_argument("--output", "-o", metavar="FILE", help="JSONL output (default: stdout)")
    group.add_argument("--batch-size", type=int, default=16, help=batch_help)
    group.add_argument("--full", action="store_true", help="include raw criteria and evaluation texts in the output")
    group.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    group.add_argument("--strict", action="store_true", help="exit with code 4 if any item is UNSCORABLE")


def judgment_record(judgment: Judgment, full: bool) -> dict[str, Any]:
    """The JSON shape of one judgment in CLI output; ``full`` adds the judge's texts and provenance."""
    record: dict[str, Any] = {
        "index": judgment.response_index,
        "status": judgment.status.value,
        "score": judgment.score,
        "reason": judgment.reason,
    }
    if judgment.spread is not None and len(judgment.chains) > 1:
        record["spread"] = judgment.spread
    if judgment.score_source not in (None, "parsed"):
        record["score_source"] = judgment.score_source  # expected or forced readouts are always labelled
    if judgment.warnings:
        record["warnings"] = list(judgment.warnings)
    if full:
        full_record = judgment.to_dict()
        record["chains"] = full_record["chains"]
        record["provenance"] = full_record["provenance"]
    return record


def progress(total: int, disable: bool, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, disable=disable, unit=unit, file=sys.stderr, dynamic_ncols=True)
