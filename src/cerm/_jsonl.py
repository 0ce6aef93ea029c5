"""Reading JSON Lines with errors that name the file and line (shared by the CLI and the eval loaders)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any


def iter_json_lines(lines: Iterable[str], name: str, error: type[Exception]) -> Iterator[tuple[str, Any]]:
    """Yield ``("name:line", parsed value)`` for each non-blank line; a malformed line raises ``error`` naming it."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        yield where, value
