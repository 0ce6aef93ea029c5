"""Options and helpers shared by the sub-commands: judge construction, JSONL reading with precise errors, output."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import logging
import sys
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal

from cerm._config import JudgeConfig
from cerm._errors import ConfigurationError
from cerm._jsonl import iter_json_lines
from cerm._judge import Judge
from cerm._reward_judge import RewardJudge
from cerm._ties import TieBreak, check_sampling
from cerm._types import Judgment, TieBreakReport
from cerm.backends import backend_class
from cerm.cli import EXIT_ERRORED, EXIT_OK, EXIT_UNSCORABLE, InputError

logger = logging.getLogger("cerm")


def add_judge_options(
    parser: argparse.ArgumentParser,
    *,
    config_class: type[JudgeConfig] = JudgeConfig,
    flags: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """The judge's options: model and backend, then one option per :class:`~cerm.JudgeConfig` field, generated from
    the dataclass (name, type, choices, default, help), so a new config field is on the command line by itself.

    ``flags`` renames a field's options (``{"seed": ["--judge-seed"]}``) for a sub-command that uses the field's usual
    spelling for something else; the value still lands in ``args.<field name>``, which :func:`config_from_args` reads.
    """
    group = parser.add_argument_group("judge")
    group.add_argument(
        "--model",
        default="demo",
        help="model name or path; 'demo' is the embedded tiny demo judge (default), "
        "'PKU-ONELab/CE-RM-4B' the released CE-RM judge",
    )
    group.add_argument("--backend", default=None, help="backend name (default: hf; openai when --base-url is given)")
    group.add_argument(
        "--base-url",
        action="append",
        default=[],
        metavar="URL",
        help="an OpenAI-compatible server, repeatable: several form an endpoint pool (implies --backend openai)",
    )
    group.add_argument(
        "--base-urls-file",
        default=None,
        metavar="FILE",
        help="a file of server URLs, one per line ('#' comments), added to the --base-url pool",
    )
    group.add_argument(
        "--backend-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra backend setting, repeatable (e.g. device=cpu, dtype=bfloat16, batch_size=16); "
        "values are parsed as JSON when possible",
    )
    group.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        metavar="N",
        help="token budget of both turns (overrides --criteria-max-new-tokens and --evaluation-max-new-tokens)",
    )
    group.add_argument(
        "--criteria-cache", metavar="FILE", default=None, help="SQLite criteria cache file (reused across runs)"
    )
    group.add_argument(
        "--slot-judge",
        metavar="YAML",
        default=None,
        help="judge with an ESFP-RM slot judge described by this YAML file (cerm.SlotJudgeConfig fields; see the "
        "README) instead of the CE-RM judge; its explanation model is --model/--backend",
    )
    renamed = dict(flags or {})
    hints = typing.get_type_hints(config_class)
    for spec in dataclasses.fields(config_class):
        option = _config_option(spec, hints[spec.name], renamed.pop(spec.name, None))
        if option is None:
            logger.debug("JudgeConfig.%s has a type the command line cannot express; not an option", spec.name)
            continue
        names, settings = option
        group.add_argument(*names, dest=spec.name, **settings)
    if renamed:
        raise ValueError(f"flags names fields {sorted(renamed)} that {config_class.__name__} does not have")
    parser.set_defaults(_judge_config_class=config_class)


def add_tie_break_options(parser: argparse.ArgumentParser, *, scope: str) -> None:
    """``--tie-break`` and one ``--tie-<field>`` option per :class:`~cerm.TieBreak` field, generated from the dataclass
    like the judge's options. ``scope`` says in the help which ties the sub-command breaks."""
    group = parser.add_argument_group(
        "adaptive tie-break",
        "Spend extra judge samples only on candidates whose scores tie: they are first ordered by their expected "
        "scores (where the backend returns log-probabilities; no generation), then get sampled chains in rounds, "
        "reusing every chain already drawn, until one leads or a limit is reached. Off unless --tie-break is given; "
        "the --tie-* options need it.",
    )
    group.add_argument("--tie-break", action="store_true", help=f"break ties with extra samples: {scope}")
    hints = typing.get_type_hints(TieBreak)
    for spec in dataclasses.fields(TieBreak):
        option = _config_option(spec, hints[spec.name], ["--tie-" + spec.name.replace("_", "-")])
        assert option is not None, f"TieBreak.{spec.name} has a type the command line cannot express"
        names, settings = option
        # None when not given, so that a --tie-* option without --tie-break is told (the help shows the default).
        group.add_argument(*names, dest=_TIE_DEST + spec.name, **{**settings, "default": None})


#: The prefix of the argparse destinations of the --tie-* options (clear of the judge's own fields).
_TIE_DEST = "tie_break_"


def tie_break_from_args(args: argparse.Namespace) -> TieBreak | None:
    """The :class:`~cerm.TieBreak` of the options :func:`add_tie_break_options` added, or None without --tie-break;
    checked against the judge's settings (a tie-break needs sampled chains) before any model loads."""
    given = {
        spec.name: getattr(args, _TIE_DEST + spec.name)
        for spec in dataclasses.fields(TieBreak)
        if getattr(args, _TIE_DEST + spec.name, None) is not None
    }
    if not getattr(args, "tie_break", False):
        if given:
            options = ", ".join("--tie-" + name.replace("_", "-") for name in given)
            raise InputError(f"{options} set a tie-break that is off: add --tie-break")
        return None
    try:
        settings = TieBreak(**given)
        check_sampling(settings, config_from_args(args))
    except ConfigurationError as exc:
        raise InputError(str(exc)) from None
    return settings


def tie_break_record(report: TieBreakReport) -> dict[str, Any]:
    """The JSON shape of a decision's tie-break in CLI output: why it stopped, what it spent, and per candidate how
    many chains it got and why."""
    return {
        "order": list(report.order),
        "rounds": report.rounds,
        "stopped": report.stopped,
        "generations": report.generations,
        "expected_used": report.expected_used,
        "candidates": [dataclasses.asdict(c) for c in report.candidates],
    }


def _config_option(
    spec: dataclasses.Field[Any], hint: Any, names: Sequence[str] | None
) -> tuple[list[str], dict[str, Any]] | None:
    """argparse settings for one config field: its flags and keyword arguments, or None for an unsupported type."""
    default = spec.default if spec.default is not dataclasses.MISSING else None
    names = list(names) if names else [*spec.metadata.get("flags", ()), "--" + spec.name.replace("_", "-")]
    help_text = str(spec.metadata.get("help") or f"JudgeConfig.{spec.name}")
    shown = "none" if default is None else default
    # X | None: the option takes an X, and leaving it out keeps None.
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if typing.get_origin(hint) in (types.UnionType, typing.Union) and len(args) == 1 else hint
    if typing.get_origin(base) is Literal:
        choices = list(typing.get_args(base))
        return names, {"choices": choices, "default": default, "help": f"{help_text} (default: {shown})"}
    if base is bool:
        return names, {
            "action": argparse.BooleanOptionalAction,
            "default": default,
            "help": f"{help_text} (default: {'on' if default else 'off'})",
        }
    if base in (int, float, str):
        metavar = {int: "N", float: "X", str: "TEXT"}[base]
        return names, {"type": base, "default": default, "metavar": metavar, "help": f"{help_text} (default: {shown})"}
    return None


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
    """The :class:`~cerm.JudgeConfig` of the options :func:`add_judge_options` added (``--max-new-tokens`` sets both
    turn budgets)."""
    config_class: type[JudgeConfig] = getattr(args, "_judge_config_class", JudgeConfig)
    values = {
        spec.name: getattr(args, spec.name) for spec in dataclasses.fields(config_class) if hasattr(args, spec.name)
    }
    if getattr(args, "max_new_tokens", None) is not None:
        values["criteria_max_new_tokens"] = values["evaluation_max_new_tokens"] = args.max_new_tokens
    return config_class(**values)


def judge_from_args(args: argparse.Namespace) -> RewardJudge:
    """The judge the options describe: CE-RM's :class:`~cerm.Judge`, or with ``--slot-judge`` a
    :class:`~cerm.SlotJudge` whose explanations come from the ``--model``/``--backend`` judge options."""
    config = config_from_args(args)  # validate settings before the (slow) model load
    cache = getattr(args, "criteria_cache", None)
    settings = _parse_backend_args(args.backend_arg)
    urls = base_urls_from_args(args)
    backend = args.backend or ("openai" if urls else "hf")
    if urls:
        if "base_url" in settings or "base_urls" in settings:
            raise InputError("give the servers with --base-url / --base-urls-file or with --backend-arg, not both")
        settings["base_urls" if len(urls) > 1 else "base_url"] = urls if len(urls) > 1 else urls[0]
    _check_backend_settings(backend, settings)
    slot_file = getattr(args, "slot_judge", None)
    if slot_file is None:
        return Judge(args.model, backend=backend, config=config, cache=cache, **settings)
    from cerm._slot import SlotJudgeConfig, slot_judge_from_config

    try:
        slot_config = SlotJudgeConfig.from_yaml(slot_file)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"--slot-judge {slot_file}: {exc}") from exc
    return slot_judge_from_config(
        slot_config, model=args.model, backend=backend, judge_config=config, cache=cache, **settings
    )


def base_urls_from_args(args: argparse.Namespace) -> list[str]:
    """The servers of ``--base-url`` (in order) then of ``--base-urls-file``: one per line, blank lines and ``#``
    comments skipped."""
    urls = [u.strip() for u in getattr(args, "base_url", None) or []]
    path = getattr(args, "base_urls_file", None)
    if path:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise InputError(f"--base-urls-file {path}: {exc.strerror or exc}") from None
        urls += [line.split("#", 1)[0].strip() for line in lines]
    urls = [u for u in urls if u]
    if (getattr(args, "base_url", None) or path) and not urls:
        raise InputError("--base-url / --base-urls-file gave no server URL")
    return urls


def _check_backend_settings(name: str, settings: Mapping[str, Any]) -> None:
    """A --backend-arg the backend does not take is the user's mistake (exit 2), told before the model loads; the
    same TypeError from inside the backend would be a bug."""
    parameters = inspect.signature(backend_class(name).__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(settings) - set(parameters) | ({"self", "model"} & set(settings)))
    if unknown:
        accepted = sorted(set(parameters) - {"self", "model"})
        raise InputError(f"backend {name!r} has no setting {', '.join(unknown)}; it accepts {', '.join(accepted)}")


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
    group.add_argument(
        "--strict", action="store_true", help="exit with code 4 if any item is UNSCORABLE (errors always exit 5)"
    )


def exit_code(*, errored: bool, unscorable: bool) -> int:
    """5 when any item ERRORED (no judgment: rerun it), whatever --strict says; else 4 for UNSCORABLE items under
    --strict (the caller passes ``unscorable`` only then); else 0."""
    if errored:
        logger.error("some items errored (a generation failed, no judgment): their status is 'error'; rerun them")
        return EXIT_ERRORED
    return EXIT_UNSCORABLE if unscorable else EXIT_OK


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


def progress(total: int | None, disable: bool, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, disable=disable, unit=unit, file=sys.stderr, dynamic_ncols=True)
