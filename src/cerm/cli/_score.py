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
