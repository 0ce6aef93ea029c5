"""``cerm merge``: join the shard files of a ``cerm score --shard`` run in input order, and say what is missing."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from cerm.cli import EXIT_ERRORED, EXIT_OK, InputError

logger = logging.getLogger("cerm")

EPILOG = """\
examples:
  cerm merge out/                          # writes out/merged.jsonl
  cerm merge out/ --output scored.jsonl
exit codes: 0 every item has a record; 5 some items are missing (a shard not run or not finished: rerun it) or
have an ERROR judgment (rerun their shard with --retry-errors); the merged file is written either way.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "merge",
        help="join the shards of a `cerm score --shard` run in input order",
        description="Join the shard files of a sharded `cerm score` run in input order; report missing items.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folder", help="the --output folder of the shards")
    parser.add_argument("--output", "-o", metavar="FILE", help="merged JSONL (default: FOLDER/merged.jsonl)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cerm._errors import ConfigurationError
    from cerm._shards import merge_shards

    try:
        report = merge_shards(args.folder, args.output)
    except ConfigurationError as exc:
        raise InputError(str(exc)) from None
    print(f"{report.path}: {report.written} of {report.items} items")
    for label, ids in (("missing", report.missing), ("with an ERROR judgment", report.errored)):
        if ids:
            shown = ", ".join(ids[:20]) + (f", ... ({len(ids) - 20} more)" if len(ids) > 20 else "")
            print(f"{len(ids)} items {label}: {shown}")
    return EXIT_OK if report.complete and not report.errored else EXIT_ERRORED
