"""``cerm serve``: the OpenRLHF-compatible reward server (FastAPI + uvicorn) in the foreground."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cerm._errors import BackendUnavailableError
from cerm.cli import EXIT_OK, InputError
from cerm.cli._common import (
    add_judge_options,
    add_tie_break_options,
    config_from_args,
    judge_from_args,
    tie_break_from_args,
)
from cerm.integrations.openrlhf import (  # FastAPI itself is imported only by run()
    DEFAULT_CRITERIA_CACHE_SIZE,
    DEFAULT_END_MARKERS,
    openrlhf_query,
)

logger = logging.getLogger("cerm")

#: The environment variable read for the bearer token when --api-key is not given (keeps it out of `ps` listings).
API_KEY_ENV = "CERM_SERVE_API_KEY"

EPILOG = """\
POST /get_reward  {"query": [prompt+response, ...], "prompts": [prompt, ...], "labels": [...]}
             ->   {"rewards": [...], "scores": [...], "extra_logs": {"cerm_scorable": [...]}, "cerm": [...]}
GET  /health      status, model, micro-batching counters, and an endpoint pool's per-server counters

OpenRLHF (0.11): --reward.remote_url http://HOST:PORT/get_reward   (older releases: --remote_rm_url)
UNSCORABLE samples get --unscorable-reward (required: choose it knowingly) and cerm_scorable = 0.
ERROR samples (the judge's generation failed: no judgment) get no reward: their request answers 503, which OpenRLHF
retries (5 attempts); if it persists, OpenRLHF 0.11.2 leaves that sample without a reward. Other requests are served.
Samples of one prompt share one criteria set however they arrive (a criteria cache, on by default).
--tie-break (off by default): samples of one prompt judged in the same micro-batch whose scores tie get more chains,
so a group with equal rewards can separate; a tied sample costs up to --tie-max-chains judgments instead of one.
The response is the sample text after its prompt, with trailing end-of-turn markers removed (built in: ChatML, Llama 3,
Gemma, Mistral, Phi; add more with --end-marker); the judge's query is the prompt's last user turn (--query-field or
--query-fn to change that). A prompt the policy cut from the left is judged in full, as sent, and flagged
prompt_truncated (extra_logs cerm_prompt_truncated).
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
    extract = parser.add_argument_group("what the judge reads")
    extract.add_argument(
        "--query-field",
        default=None,
        metavar="FIELD",
        help="take the judge's query from this request field (one string per sample), e.g. 'labels' with OpenRLHF's "
        "--label_key naming a column that holds the plain question; default: the prompt's last user turn",
    )
    extract.add_argument(
        "--query-fn",
        default=None,
        metavar="MODULE:FUNC",
        help="a function prompt text -> the judge's query, as an import path (my_pkg.rewards:query) or a file "
        "(path/to/file.py:query)",
    )
    extract.add_argument(
        "--response-fn",
        default=None,
        metavar="MODULE:FUNC",
        help="a function response text (after the prompt, end markers removed) -> the text the judge sees",
    )
    extract.add_argument(
        "--end-marker",
        action="append",
        default=[],
        metavar="TEXT",
        help="another end-of-turn marker to strip from the end of responses (repeatable; built in: "
        + " ".join(DEFAULT_END_MARKERS)
        + ")",
    )
    add_judge_options(parser)
    add_tie_break_options(
        parser,
        scope="samples of one prompt in a micro-batch whose scores tie (a GRPO group with equal rewards has no "
        "advantage) get more chains; costs up to --tie-max-chains judgments per tied sample",
    )
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
    if args.query_field is not None and args.query_fn is not None:
        raise InputError("--query-field and --query-fn both say where the judge's query comes from: give one")
    if args.query_field is not None and args.query_field in ("", "query", "prompts"):
        raise InputError(
            f"--query-field must name a request field other than 'query' and 'prompts': {args.query_field!r}"
        )
    if any(not marker for marker in args.end_marker):
        raise InputError("--end-marker is empty")
    query_fn = load_function(args.query_fn, "--query-fn") if args.query_fn else None
    response_fn = load_function(args.response_fn, "--response-fn") if args.response_fn else None
    config_from_args(args)  # validate before importing the web stack and loading the model
    tie_break = tie_break_from_args(args)
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
            end_markers=(*DEFAULT_END_MARKERS, *args.end_marker),
            query_field=args.query_field,
            response_fn=response_fn,
            query_fn=query_fn or openrlhf_query,
            tie_break=tie_break,
        )
        url = f"http://{args.host}:{args.port}/get_reward"
        logger.info(
            "cerm reward server for %s on %s (%s)",
            judge.model_id,
            url,
            "bearer token required" if api_key else "no API key",
        )
        if api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
            logger.warning("serving on %s without an API key: anyone who reaches it can use the judge", args.host)
        # uvicorn's own info lines say where it listens; per-request access lines only with -v.
        uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=bool(args.verbose))
    return EXIT_OK


def load_function(spec: str, option: str) -> Callable[[str], str]:
    """``module.path:name`` or ``path/to/file.py:name`` -> that callable; a clear InputError otherwise."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise InputError(f"{option} must be MODULE:FUNCTION or FILE.py:FUNCTION, got {spec!r}")
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser()
            if not path.is_file():
                raise InputError(f"{option}: no such file {str(path)!r}")
            module_spec = importlib.util.spec_from_file_location(f"cerm_user_{path.stem}", path)
            assert module_spec is not None
            assert module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except InputError:
        raise
    except Exception as exc:  # the user's module failed to import: name it, with its error
        raise InputError(f"{option}: could not import {target!r}: {type(exc).__name__}: {exc}") from exc
    function = getattr(module, name, None)
    if not callable(function):
        raise InputError(f"{option}: {target!r} has no function {name!r}")
    return function  # type: ignore[no-any-return]
