"""``cerm score``: judge responses, from the command line or JSONL in / JSONL out."""

from __future__ import annotations

import argparse
from typing import Any

from cerm.cli import InputError
from cerm.cli._common import (
    add_io_options,
    add_judge_options,
    check_text,
    chunks,
    exit_code,
    judge_from_args,
    judgment_record,
    open_output,
    progress,
    read_jsonl,
    write_json_line,
)

EPILOG = """\
examples:
  cerm score --query "What is 2+2?" --response "4" --response "5"
  cerm score --input items.jsonl --output scored.jsonl      # lines: {"query": ..., "responses": [...]}
  cerm score --input big.jsonl --output out/ --shard 3/8    # one resumable shard of a job array; then:
  cerm merge out/ --output scored.jsonl                     # the shards in input order, missing items reported
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score responses to queries (0-10, or UNSCORABLE with a reason)",
        description="Score responses with a CE-RM judge: criteria once per query, then one evaluation per response.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--query", "-q", help="the query (with --response)")
    parser.add_argument("--response", "-r", action="append", default=[], help="a response, repeatable")
    add_io_options(parser, batch_help="queries per backend round trip (default 16)")
    sharding = parser.add_argument_group("sharded, resumable runs (a job array: one shard per task)")
    sharding.add_argument(
        "--shard",
        metavar="I/N",
        help="score shard I of N (0-based; item k belongs to shard k mod N) of --input into the folder --output, "
        "appending as it goes; rerun the same command after a kill to resume",
    )
    sharding.add_argument(
        "--retry-errors", action="store_true", help="with --shard: score again the items recorded with an ERROR"
    )
    add_judge_options(parser)
    parser.set_defaults(func=run)


def _rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.input and (args.query or args.response):
        raise InputError("give either --input or --query/--response, not both")
    if args.input:
        return read_jsonl(args.input, "responses")
    if args.query is None:
        raise InputError("nothing to score: give --query with one or more --response, or --input FILE")
    if not args.query.strip():
        raise InputError("--query is empty")
    if not args.response:
        raise InputError("no responses: give at least one --response")
    check_text(args.query, "--query")
    for i, response in enumerate(args.response):
        check_text(response, f"--response #{i + 1}")
    return [{"query": args.query, "responses": list(args.response)}]


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise InputError("--batch-size must be >= 1")
    if args.shard is not None or args.retry_errors:
        return _run_shard(args)
    rows = _rows(args)
    any_unscorable = any_errored = False
    with judge_from_args(args) as judge, open_output(args.output) as out:
        bar = progress(sum(len(r["responses"]) for r in rows), args.no_progress or len(rows) == 1, "response")
        for span in chunks(len(rows), args.batch_size):
            batch = [rows[i] for i in span]
            results = judge.judge_batch([(r["query"], r["responses"]) for r in batch])
            for row, judgments in zip(batch, results, strict=True):
                any_unscorable |= any(not j.scorable for j in judgments)
                any_errored |= any(j.errored for j in judgments)
                record = {
                    **row,
                    "scores": [j.score for j in judgments],
                    "judgments": [judgment_record(j, args.full) for j in judgments],
                }
                write_json_line(out, record)
                bar.update(len(judgments))
        bar.close()
    return exit_code(errored=any_errored, unscorable=args.strict and any_unscorable)


def _run_shard(args: argparse.Namespace) -> int:
    from cerm._errors import ConfigurationError
    from cerm._shards import Shard, score_shard

    if args.shard is None:
        raise InputError("--retry-errors needs --shard")
    if not args.input or args.input == "-" or args.query or args.response:
        raise InputError("--shard needs --input FILE (a file: a resumed run reads it again), not stdin or --query")
    if not args.output or args.output == "-":
        raise InputError("--shard needs --output FOLDER (where the shard's results are appended)")
    try:
        shard = Shard.parse(args.shard)
    except ConfigurationError as exc:
        raise InputError(f"--shard: {exc}") from None
    read_jsonl(args.input, "responses")  # every line checked, with file:line errors, before the model loads
    with judge_from_args(args) as judge:
        bar = progress(None, args.no_progress, "item")
        report = score_shard(
            judge,
            args.input,
            args.output,
            shard,
            batch_size=args.batch_size,
            retry_errors=args.retry_errors,
            judgment_record=lambda j: judgment_record(j, args.full),
            on_batch=bar.update,
        )
        bar.close()
    print(
        f"{report.path}: {report.items} items in shard {shard.index}/{shard.count}, {report.resumed} already done, "
        f"{report.scored} scored now ({report.errored} with errors, {report.unscorable} unscorable)"
    )
    return exit_code(errored=report.errored > 0, unscorable=args.strict and report.unscorable > 0)
