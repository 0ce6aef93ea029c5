"""The ``cerm`` command line: one sub-command per module, each exposing ``register(subparsers)``.

Exit codes (shared by every sub-command):

* 0 - success (UNSCORABLE items are results, not failures, unless ``--strict`` is given);
* 1 - an unexpected internal error (a bug: the traceback is logged; please report it);
* 2 - bad usage or bad input (missing file, malformed JSON line, empty response list, bad setting, ...);
* 3 - the model or backend could not be loaded (not found, missing optional dependency);
* 4 - ``--strict`` was given and some items were UNSCORABLE;
* 5 - some items ERRORED: a generation failed (server outage, exhausted retries, out of memory), so they got no
  judgment at all. Their results are still written (status "error"); rerun them. Independent of ``--strict``, and
  it takes precedence over 4.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from cerm._errors import BackendUnavailableError, ConfigurationError, ModelNotFoundError
from cerm._version import __version__

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_UNSCORABLE = 4
EXIT_ERRORED = 5

# Sub-command modules, imported when the parser is built. Each defines ``register(subparsers)`` and sets
# ``func`` on its parser; heavy imports stay inside the handlers so ``cerm --help`` is instant.
_COMMANDS = (
    "cerm.cli._score",
    "cerm.cli._merge",
    "cerm.cli._rerank",
    "cerm.cli._serve",
    "cerm.cli._eval",
    "cerm.cli._train",
)


class InputError(Exception):
    """Bad user input detected by a sub-command; the message names the file, line or field."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cerm",
        description="CE-RM judge: criteria once per query, then a 0-10 score per response.",
    )
    parser.add_argument("--version", action="version", version=f"cerm {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr (-vv: debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMANDS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Only `cerm train` takes free-form setting flags (--max-steps 2); everywhere else they are mistakes.
        if not getattr(args, "accepts_extra_flags", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.extra_flags = extra
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args))
    except InputError as exc:
        print(f"cerm {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ModelNotFoundError, BackendUnavailableError) as exc:
        print(f"cerm {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_MODEL
    except ConfigurationError as exc:  # settings that cannot work together: the user's input
        print(f"cerm {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"cerm {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else is a bug in cerm (bad input is caught above as InputError)
        logging.getLogger("cerm").exception("cerm %s: internal error", args.command)
        print(
            f"cerm {args.command}: internal error: {type(exc).__name__}: {exc} (a bug in cerm; please report it with "
            "the traceback above)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
