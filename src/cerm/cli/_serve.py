"""``cerm serve``: the OpenRLHF-compatible reward server (FastAPI + uvicorn) in the foreground."""

from __future__ import annotations

import argparse
import logging
import math
import os
from typing import Any

from cerm._errors import BackendUnavailableError
from cerm.cli import EXIT_OK, InputError
from cerm.cli._common import add_judge_options, config_from_args, judge_from_args
from cerm.integrations.openrlhf import DEFAULT_CRITERIA_CACHE_SIZE  # FastAPI itself is imported only by run()

logger = logging.getLogger("cerm")

#: The environment variable read for the bearer token when --api-key is not given (keeps it out of `ps` listings).
API_KEY_ENV = "CERM_SERVE_API_KEY"

EPILOG = """\
POST /get_reward  {"query": [prompt+response, ...], "prompts": [prompt, ...], "labels": [...]}
             ->   {"rewards": [...], "scores": [...], "extra_logs": {"cerm_scorable": [...]}, "cerm": [...]}
GET  /health      status, model, and micro-batching counters

OpenRLHF (0.11): --reward.remote_url http://HOST:PORT/get_reward   (older releases: --remote_rm_url)
UNSCORABLE samples get --unscorable-reward (required: choose it knowingly) and cerm_scorable = 0.
ERROR samples (the judge's generation failed: no judgment) get no reward: their request answers 503, which OpenRLHF
retries and, if the failure persists, stops on. Other requests keep being served.
Samples of one prompt share one criteria set however they arrive (a criteria cache, on by default).
Binds 127.0.0.1 unless --host says otherwise; with --api-key (or $CERM_SERVE_API_KEY) every request needs
"Authorization: Bearer KEY".
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
    group.add_argument(
        "--criteria-cache-size",
        type=int,
        default=DEFAULT_CRITERIA_CACHE_SIZE,
        metavar="N",
        help=f"criteria sets kept in memory so samples of one prompt share one criteria set however they arrive "
        f"(default {DEFAULT_CRITERIA_CACHE_SIZE}; 0 = off; unused with --criteria-cache FILE)",
    )
    group.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help=f"require 'Authorization: Bearer KEY' on every request (default: ${API_KEY_ENV}, else no key)",
    )
    add_judge_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port < 65536:
        raise InputError(f"--port must be in 0..65535, got {args.port}")
    if args.max_batch_items < 1 or args.max_items_per_request < 1 or args.max_wait_ms < 0 or args.max_body_mb <= 0:
        raise InputError(
            "--max-batch-items and --max-items-per-request must be >= 1, --max-wait-ms >= 0, --max-body-mb > 0"
        )
    if not math.isfinite(args.unscorable_reward):
        raise InputError(f"--unscorable-reward must be a finite number, got {args.unscorable_reward}")
    if args.criteria_cache_size < 0:
        raise InputError(f"--criteria-cache-size must be >= 0, got {args.criteria_cache_size}")
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    if args.api_key is not None and not args.api_key:
        raise InputError("--api-key is empty")
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
            criteria_cache_size=args.criteria_cache_size,
            api_key=api_key,
        )
        url = f"http://{args.host}:{args.port}/get_reward"
        logger.info(
            "cerm reward server for %s on %s (%s)",
            judge.backend.model_id,
            url,
            "bearer token required" if api_key else "no API key",
        )
        if api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
            logger.warning("serving on %s without an API key: anyone who reaches it can use the judge", args.host)
        # uvicorn's own info lines say where it listens; per-request access lines only with -v.
        uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=bool(args.verbose))
    return EXIT_OK
