"""``cerm rerank``: Best-of-N over JSONL; keeps the best candidate of each line."""

from __future__ import annotations

import argparse
from typing import Any

from cerm._reward_judge import best_of_n as _best_of_n
from cerm._reward_judge import tied_best_of_n as _tied_best_of_n
from cerm._types import Judgment, TieBreakReport
from cerm.cli import InputError
from cerm.cli._common import (
    add_io_options,
    add_judge_options,
    add_tie_break_options,
    chunks,
    exit_code,
    judge_from_args,
    judgment_record,
    open_output,
    progress,
    read_jsonl,
    tie_break_from_args,
    tie_break_record,
    write_json_line,
)

EPILOG = """\
input lines:  {"query": ..., "candidates": [...]}   ("responses" is accepted too)
output lines: the input plus best_index, best, best_score, ranking (indices, best first), scores, judgments.
Ties go to the earliest candidate; an UNSCORABLE candidate never wins (best_index is null if none is scorable).

With --tie-break, the candidates tied at the top get more samples (see the options below) and each line adds
tie_break: {order, rounds, stopped, generations, expected_used, candidates: [{index, first_score, chains, added,
rounds, group, key, contending, reason}]}. scores are then the tied candidates' means over all their chains, and
ranking is the tie-break's order: a tied candidate never overtakes one it was not tied with.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "rerank",
        help="Best-of-N: pick the best candidate per query from JSONL",
        description="Rerank candidates with a CE-RM judge and keep the best of each query.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_io_options(parser, batch_help="queries per backend round trip (default 16)")
    add_judge_options(parser)
    add_tie_break_options(parser, scope="the candidates tied at the top of each query")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.input:
        raise InputError("give --input FILE (JSONL with 'query' and 'candidates'), or '-' for stdin")
    if args.batch_size < 1:
        raise InputError("--batch-size must be >= 1")
    tie_break = tie_break_from_args(args)
    rows = read_jsonl(args.input, "candidates", aliases=("responses",))
    no_winner = any_errored = False
    with judge_from_args(args) as judge, open_output(args.output) as out:
        bar = progress(len(rows), args.no_progress or len(rows) == 1, "query")
        for span in chunks(len(rows), args.batch_size):
            batch = [rows[i] for i in span]
            items = [(r["query"], r["candidates"]) for r in batch]
            decided: list[tuple[list[Judgment], TieBreakReport | None]]
            if tie_break is None:
                decided = [(judgments, None) for judgments in judge.judge_batch(items)]
            else:
                decided = [(js, report) for js, report in judge.decide_batch(items, tie_break, scope="top")]
            for row, (judgments, report) in zip(batch, decided, strict=True):
                if report is None:
                    best = _best_of_n(row["candidates"], judgments)
                else:
                    best = _tied_best_of_n(row["candidates"], judgments, report)
                no_winner |= best.best_index is None
                any_errored |= any(j.errored for j in judgments)
                write_json_line(
                    out,
                    {
                        **row,
                        "best_index": best.best_index,
                        "best": best.best,
                        "best_score": best.best_score,
                        "ranking": [r.index for r in best.ranking],
                        "scores": [j.score for j in judgments],
                        "judgments": [judgment_record(j, args.full) for j in judgments],
                        **({} if report is None else {"tie_break": tie_break_record(report)}),
                    },
                )
                bar.update(1)
        bar.close()
    return exit_code(errored=any_errored, unscorable=args.strict and no_winner)
