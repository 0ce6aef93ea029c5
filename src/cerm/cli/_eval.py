"""``cerm eval``: evaluate a judge on a benchmark; per-item JSONL as it goes (resumable), report.md, PNG plots."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cerm.cli import EXIT_OK, InputError

EPILOG = """\
examples:
  cerm eval --data llmbar --limit 100 --seed 0 --out runs/llmbar
  cerm eval --data my_pairs.jsonl --model PKU-ONELab/CE-RM-4B --out runs/mine
  cerm eval --data rm_bench --limit 20 --out runs/rmb --tie-policy excluded

--data is a JSONL file in the normalized schema ({"id", "prompt", "chosen", "rejected": [...], "category", "subset",
"meta"}), a folder holding all.jsonl, or a shared benchmark name (llmbar, judgebench, rm_bench, hh_rlhf) looked up in
$CERM_DATA_DIR or ../shared/data beside the repository. --seed picks the slice (a seeded sample of --limit items;
without --seed the first --limit items) and is also the judge's sampling seed. Rerunning with the same --out resumes.
"""


def register(subparsers: Any) -> None:
    from cerm.cli._common import add_judge_options

    parser = subparsers.add_parser(
        "eval",
        help="evaluate the judge on a benchmark: accuracy tables, Best-of-N, length bias, plots",
        description="Evaluate a CE-RM judge on preference data. Each item's candidates share one criteria set.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_argument_group("evaluation")
    group.add_argument("--data", help="JSONL file, folder with all.jsonl, or shared benchmark name")
    group.add_argument("--out", required=True, metavar="DIR", help="output folder (rerun into it to resume)")
    group.add_argument("--limit", type=int, default=None, help="evaluate this many items (a seeded sample with --seed)")
    group.add_argument("--batch-size", type=int, default=8, help="items per judge_batch call (default 8)")
    group.add_argument("--tie-policy", choices=["half", "wrong", "excluded"], default="half", help="default: half")
    group.add_argument(
        "--unscorable-policy",
        choices=["tie", "wrong", "excluded"],
        default="tie",
        help="how a pair with an UNSCORABLE side counts (default: tie, i.e. per --tie-policy)",
    )
    group.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    group.add_argument("--full", action="store_true", help="store prompt, criteria and evaluation texts per item")
    group.add_argument("--fresh", action="store_true", help="discard results already in --out instead of resuming")
    group.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    group.add_argument(
        "--report-only",
        action="store_true",
        help="no judging: rebuild metrics, report and plots from the results already in --out (for example under "
        "another --tie-policy, or to look at an unfinished run, which the report then marks as incomplete)",
    )
    add_judge_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cerm.cli._common import config_from_args, judge_from_args
    from cerm.eval import DataError, evaluate, load_items

    if args.report_only:
        return _report_only(args)
    if not args.data:
        raise InputError("give --data (a JSONL file or a shared benchmark name), or --report-only")
    if args.batch_size < 1:
        raise InputError("--batch-size must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise InputError("--limit must be >= 1")
    config_from_args(args)  # bad settings fail before the data is read
    try:
        items = load_items(args.data, limit=args.limit, seed=args.seed)
    except DataError as exc:
        raise InputError(str(exc)) from None
    info = {"data": args.data, "slice": _slice_text(args, len(items))}
    with judge_from_args(args) as judge:
        result = evaluate(
            judge,
            items,
            args.out,
            data_name=args.data,
            batch_size=args.batch_size,
            tie_policy=args.tie_policy,
            unscorable_policy=args.unscorable_policy,
            plots=not args.no_plots,
            full=args.full,
            fresh=args.fresh,
            progress=not args.no_progress,
            info=info,
        )
    stats = result.metrics["pairwise"]
    acc = "n/a" if stats.accuracy is None else f"{100 * stats.accuracy:.1f}%"
    rate = result.metrics["judgments"]["unscorable_rate"]
    print(
        f"cerm eval: {len(result.records)} items ({result.resumed_items} resumed), pairwise accuracy {acc} "
        f"(ties: {args.tie_policy}, unscorable: {args.unscorable_policy}), unscorable judgments "
        f"{'n/a' if rate is None else f'{100 * rate:.1f}%'}; report: {result.report}",
        file=sys.stderr,
    )
    return EXIT_OK


def _report_only(args: argparse.Namespace) -> int:
    from cerm.eval import DataError, report_from_results

    try:
        metrics, report, _ = report_from_results(
            args.out, tie_policy=args.tie_policy, unscorable_policy=args.unscorable_policy, plots=not args.no_plots
        )
    except DataError as exc:
        raise InputError(str(exc)) from None
    stats = metrics["pairwise"]
    acc = "n/a" if stats.accuracy is None else f"{100 * stats.accuracy:.1f}%"
    done = metrics["items"]
    print(f"cerm eval: report rebuilt from {done} items, pairwise accuracy {acc}; report: {report}", file=sys.stderr)
    return EXIT_OK


def _slice_text(args: argparse.Namespace, n: int) -> str:
    if args.limit is None:
        return f"all {n} items"
    if args.seed is None:
        return f"the first {n} items"
    return f"{n} items sampled with seed {args.seed} (kept in data order)"
