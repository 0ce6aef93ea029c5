"""``cerm serve``: the OpenRLHF-compatible reward server (FastAPI + uvicorn) in the foreground."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from cerm._errors import BackendUnavailableError
from cerm.cli import EXIT_OK, InputError
from cerm.cli._common import add_judge_options, config_from_args, judge_from_args

logger = logging.getLogger("cerm")

EPILOG = """\
POST /get_reward  {"query": [prompt+response, ...], "prompts": [prompt, ...], "labels": [...]}
             ->   {"rewards": [...], "scores": [...], "extra_logs": {"cerm_scorable": [...]}, "cerm": [...]}
GET  /health      status, model, and micro-batching counters

OpenRLHF: --remote_rm_url http://HOST:PORT/get_reward
UNSCORABLE samples get --unscorable-reward (required: choose it knowingly) and cerm_scorable = 0.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the judge as an OpenRLHF remote reward model over HTTP",
        description="Run an HTTP reward server speaking OpenRLHF's remote reward contract, with micro-batching of "
        "concurrent requests into large judge calls.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_argument_group("server")
    group.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)")
    group.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    group.add_argument(
        "--unscorable-reward",
        type=float,
        required=True,
        help="reward answered for an UNSCORABLE sample, in the reward's units (after --scale); required",
    )
    group.add_argument(
        "--scale",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=None,
        help="map the 0-10 score linearly onto [LOW, HIGH] (e.g. 0 1); default: keep 0-10",
    )
    group.add_argument("--max-batch-items", type=int, default=256, help="samples per judge call at most (256)")
    group.add_argument("--max-wait-ms", type=float, default=10.0, help="wait for more requests after the first (10)")
    group.add_argument("--max-body-mb", type=float, default=16.0, help="request body limit in MiB (16)")
    group.add_argument("--max-items-per-request", type=int, default=4096, help="samples per request at most (4096)")
    add_judge_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port < 65536:
        raise InputError(f"--port must be in 0..65535, got {args.port}")
    if args.max_batch_items < 1 or args.max_items_per_request < 1 or args.max_wait_ms < 0 or args.max_body_mb <= 0:
        raise InputError(
            "--max-batch-items and --max-items-per-request must be >= 1, --max-wait-ms >= 0, --max-body-mb > 0"
        )
    config_from_args(args)  # validate before importing the web stack and loading the model
    from cerm.integrations.openrlhf import _import_fastapi, create_app

    _import_fastapi()
    try:
        import uvicorn
    except ImportError as exc:
        raise BackendUnavailableError("cerm serve needs uvicorn: pip install 'ce-rm[serve]'") from exc
    with judge_from_args(args) as judge:
        app = create_app(
            judge,
            unscorable_reward=args.unscorable_reward,
            scale=tuple(args.scale) if args.scale else None,
            max_batch_items=args.max_batch_items,
            max_wait_ms=args.max_wait_ms,
            max_body_bytes=int(args.max_body_mb * 1024 * 1024),
            max_items_per_request=args.max_items_per_request,
        )
        url = f"http://{args.host}:{args.port}/get_reward"
        logger.info("cerm reward server for %s on %s", judge.backend.model_id, url)
        # uvicorn's own info lines say where it listens; per-request access lines only with -v.
        uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=bool(args.verbose))
    return EXIT_OK
