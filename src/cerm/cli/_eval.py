"""``cerm eval``: evaluate a judge on a benchmark; per-item JSONL as it goes (resumable), report.md, PNG plots."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from cerm._errors import ConfigurationError
from cerm.cli import EXIT_ERRORED, EXIT_OK, InputError

EPILOG = """\
examples:
  cerm eval --benchmark rewardbench2 --limit 100 --data-seed 0 --out runs/rb2      # from the Hugging Face Hub
  cerm eval --benchmark judgebench --rule single_game --out runs/jb
  cerm eval --benchmark rm-bench --data ./RM-Bench/ --out runs/rmb                  # the hub's files, local
  cerm eval --benchmark ppe-correctness --ppe-k 8 --limit 200 --data-seed 0 --out runs/ppe
  cerm eval --data my_pairs.jsonl --model PKU-ONELab/CE-RM-4B --out runs/mine
  cerm eval --out runs/rb2 --report-only --rule official                            # re-read, no judging

--benchmark (rewardbench2, rewardbench, rm-bench, judgebench, llmbar, ppe-correctness) loads the benchmark from the
Hugging Face Hub at its pinned commit, or its default branch where it pins none, and records the commit read
(--revision to change it), or from $CERM_DATA_DIR/<name>/, or from --data (a local copy of the hub's files, the
authors' release files, or cerm's normalized all.jsonl), and the report opens with the benchmark's official figures,
computed with the official rule (--rule picks another of the preset's rules), each with its coverage. PPE's official
code could not be read: its rules are cerm's own, stated in benchmarks/README.md. --ppe-k K judges only the first K
responses of each PPE row.

--data alone is your own JSONL in cerm's normalized schema ({"id", "prompt", "chosen", "rejected": [...], "category",
"subset", "meta"}) or a folder holding all.jsonl. --data-seed picks the slice (a seeded sample of --limit items; without
it the first --limit items); --seed is the judge's sampling seed. Rerunning with the same --out resumes, and judges
again the items whose judgment errored (no judgment produced).

--tie-break gives the candidates tied at the top of an item more judge samples (the --tie-* options set how many);
each candidate's record keeps its first score and adds what the tie-break did, and the pairwise and Best-of-N verdicts
on tied candidates follow it. A run resumes only with the same tie-break settings.
"""


def register(subparsers: Any) -> None:
    from cerm.cli._common import add_judge_options, add_tie_break_options

    parser = subparsers.add_parser(
        "eval",
        help="evaluate the judge on a benchmark: official scores, accuracy tables, Best-of-N, length bias, plots",
        description="Evaluate a CE-RM judge on preference data. Each item's candidates share one criteria set.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_argument_group("evaluation")
    group.add_argument(
        "--benchmark",
        metavar="NAME",
        help="benchmark preset: rewardbench2, rewardbench, rm-bench, judgebench, llmbar, ppe-correctness (official "
        "scoring where the official code could be read)",
    )
    group.add_argument("--rule", help="another of the preset's scoring rules (see benchmarks/README.md)")
    group.add_argument(
        "--revision",
        help="hub revision of the benchmark: a branch, tag or full commit id (default: the preset's pinned commit, "
        "else main)",
    )
    group.add_argument(
        "--ppe-k",
        type=int,
        metavar="K",
        help="ppe-correctness: judge only the first K responses of each row (default: all 32), to keep the cost down",
    )
    group.add_argument("--data", help="your JSONL file or folder; with --benchmark, a local copy of the benchmark")
    group.add_argument("--out", required=True, metavar="DIR", help="output folder (rerun into it to resume)")
    group.add_argument("--limit", type=int, default=None, help="evaluate this many items (see --data-seed)")
    group.add_argument(
        "--data-seed", type=int, default=None, help="pick --limit items by a seeded sample (default: the first ones)"
    )
    group.add_argument("--batch-size", type=int, default=8, help="items per judge_batch call (default 8)")
    group.add_argument("--tie-policy", choices=["half", "wrong", "excluded"], default="half", help="default: half")
    group.add_argument(
        "--unscorable-policy",
        choices=["wrong", "tie", "excluded"],
        default="wrong",
        help="how a pair with an unscored side (UNSCORABLE or ERROR) counts in cerm's own accuracy (default: wrong; "
        "never credit). Presets follow their official rule",
    )
    group.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    group.add_argument("--full", action="store_true", help="store prompt, criteria and evaluation texts per item")
    group.add_argument("--fresh", action="store_true", help="discard results already in --out instead of resuming")
    group.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    group.add_argument(
        "--report-only",
        action="store_true",
        help="no judging: rebuild metrics, report and plots from the results already in --out (for example under "
        "another --tie-policy or --rule, or to look at an unfinished run, which the report then marks as incomplete)",
    )
    add_judge_options(parser)
    add_tie_break_options(
        parser, scope="the candidates tied at the top of each item (the pairwise and Best-of-N verdicts follow it)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cerm.cli._common import config_from_args, judge_from_args, tie_break_from_args
    from cerm.eval import SCORERS, DataError, evaluate, load_benchmark, load_items, preset_name

    if args.report_only:
        return _report_only(args)
    if not args.data and not args.benchmark:
        raise InputError("give --benchmark NAME, --data (your JSONL file), or --report-only")
    if not args.benchmark and (args.rule or args.revision or args.ppe_k is not None):
        raise InputError("--rule, --revision and --ppe-k belong to a benchmark preset: add --benchmark NAME")
    if args.batch_size < 1:
        raise InputError("--batch-size must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise InputError("--limit must be >= 1")
    config_from_args(args)  # bad settings fail before the data is read
    tie_break = tie_break_from_args(args)
    benchmark = None
    source: dict[str, Any] = {}
    try:
        if args.benchmark:
            benchmark = preset_name(args.benchmark)
            rules = SCORERS[benchmark][2]
            if args.rule is not None and args.rule not in rules:  # before the (slow) data and model loads
                raise InputError(f"{benchmark}: --rule must be one of {', '.join(rules)}, got {args.rule!r}")
            loaded = load_benchmark(
                benchmark, args.data, revision=args.revision, limit=args.limit, seed=args.data_seed, k=args.ppe_k
            )
            items, source = loaded.items, loaded.provenance
        else:
            items = load_items(args.data, limit=args.limit, seed=args.data_seed)
            source = {"source": "local", "path": str(args.data)}
    except (DataError, ConfigurationError) as exc:
        raise InputError(str(exc)) from None
    data_name = benchmark or args.data
    info = {"data": data_name, "slice": _slice_text(args, len(items))}
    with judge_from_args(args) as judge:
        try:
            result = evaluate(
                judge,
                items,
                args.out,
                data_name=data_name,
                batch_size=args.batch_size,
                tie_policy=args.tie_policy,
                unscorable_policy=args.unscorable_policy,
                plots=not args.no_plots,
                full=args.full,
                fresh=args.fresh,
                progress=not args.no_progress,
                info=info,
                benchmark=benchmark,
                rule=args.rule,
                data_source=source,
                tie_break=tie_break,
            )
        except ConfigurationError as exc:
            raise InputError(str(exc)) from None
    print(
        f"cerm eval: {len(result.records)} items ({result.resumed_items} resumed); {_summary(result.metrics)}; "
        f"report: {result.report}",
        file=sys.stderr,
    )
    if result.errored_items:
        print(
            f"cerm eval: {result.errored_items} item(s) errored (no judgment produced); rerun the same command to "
            "judge them again",
            file=sys.stderr,
        )
        return EXIT_ERRORED
    return EXIT_OK


def _summary(metrics: Mapping[str, Any]) -> str:
    stats = metrics["pairwise"]
    judg = metrics["judgments"]
    parts = []
    preset = metrics.get("benchmark")
    if preset is not None:
        head = preset.headline
        parts.append(f"{preset.benchmark} {head.name}: {_pct(head.value)} (coverage {_pct(head.coverage)})")
    parts.append(
        f"pairwise accuracy {_pct(stats.accuracy)} (coverage {_pct(stats.coverage)}; ties: {stats.tie_policy}, "
        f"unscored: {stats.unscorable_policy})"
    )
    parts.append(f"judgments scored {_pct(judg['coverage'])}, errored {judg.get('errors', 0)}")
    return "; ".join(parts)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _report_only(args: argparse.Namespace) -> int:
    from cerm.eval import DataError, report_from_results

    try:
        metrics, report, _ = report_from_results(
            args.out,
            tie_policy=args.tie_policy,
            unscorable_policy=args.unscorable_policy,
            plots=not args.no_plots,
            benchmark=args.benchmark,
            rule=args.rule,
        )
    except (DataError, ConfigurationError) as exc:
        raise InputError(str(exc)) from None
    print(
        f"cerm eval: report rebuilt from {metrics['items']} items; {_summary(metrics)}; report: {report}",
        file=sys.stderr,
    )
    return EXIT_OK


def _slice_text(args: argparse.Namespace, n: int) -> str:
    if args.limit is None:
        return f"all {n} items"
    if args.data_seed is None:
        return f"the first {n} items"
    return f"{n} items sampled with data seed {args.data_seed} (kept in data order)"
