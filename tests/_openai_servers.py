"""Servers for the openai backend's tests: a fault-injecting OpenAI-compatible stub (aiohttp, in a thread) and a
fixture-friendly launcher for llama.cpp's real server (``python -m llama_cpp.server``).

llama.cpp's server is a test-only dependency with a long source build, so it lives in its own venv, ``.venv-llama``,
which ``make test`` builds on first use (``make venv-llama``) and reuses afterwards; the server runs there as a separate
process, so the main venv never needs it. ``make test`` sets ``CERM_LLAMA_PYTHON`` (that venv's interpreter) and
``CERM_REQUIRE_LLAMA=1``: a missing server is then a failure, not a skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

CRITERIA_TEXT = (
    "Analysis.\n[Start of Criteria]\n1. Accuracy: the answer is correct\n2. Clarity: easy to read\n[End of Criteria]"
)
_SCORE = re.compile(r"score=(\d+(?:\.\d+)?)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Seen:
    """One request as the server saw it."""

    at: float
    body: dict[str, Any]
    action: str
    headers: dict[str, str]
    path: str = ""
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class FaultServer:
    """An OpenAI-compatible ``/v1/chat/completions`` whose answers follow a schedule the test controls.

    ``schedule`` maps a tag to the actions for successive requests whose last message contains that tag (the tag is
    part of a response or query text). Actions: ``ok``, ``429`` (Retry-After: ``retry_after``), ``500``, ``503``,
    ``400``, ``401``, ``404``, ``hang`` (sleeps ``hang_s``), ``drop`` (closes the connection without answering),
    ``badjson`` (200 with a broken body), ``nochoices``. When a tag's list runs out, the answer is ``ok``.
    ``ok`` answers criteria text to a one-message conversation and ``... \\boxed{S}`` to an evaluation, S from a
    ``score=S`` in the last message (default 5). ``ignore_n`` answers one choice whatever ``n`` says (like llama.cpp).

    Synchronisation for tests that must not depend on wall-clock time: ``barriers`` (group sizes) holds the first
    ``barriers[0]`` requests until that many are in flight at once, then the next ``barriers[1]``, and so on; ``hold``
    (a threading.Event) holds every request until the test sets it. A request still held after ``hold_timeout_s``
    (a safety net against a hung test, never a performance bound) answers 500 "held too long" and is counted in
    ``held_too_long``. ``arrived`` is set when the first request arrives, ``tripped`` when a scheduled action other
    than ``ok`` is first served (the test's "now" to act, e.g. to kill a client mid-run).

    ``reject_fields`` names request fields the server refuses with HTTP 400, as OpenAI's own API does with fields it
    does not define.
    """

    schedule: dict[str, list[str]] = field(default_factory=dict)
    retry_after: str = "1"
    hang_s: float = 30.0
    ignore_n: bool = False
    latency_s: float = 0.0
    reject_fields: frozenset[str] = frozenset()
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    port: int = 0
    barriers: list[int] = field(default_factory=list)
    hold: threading.Event | None = None
    hold_timeout_s: float = 60.0
    held_too_long: int = 0
    arrived: threading.Event = field(default_factory=threading.Event)
    tripped: threading.Event = field(default_factory=threading.Event)
    _gates: dict[int, asyncio.Event] = field(default_factory=dict)
    _group_counts: dict[int, int] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def count(self, tag: str | None = None) -> int:
        if tag is None:
            return len(self.seen)
        return sum(1 for s in self.seen if tag in s.body["messages"][-1]["content"])

    def _action(self, body: dict[str, Any]) -> str:
        last = body["messages"][-1]["content"]
        for tag, actions in self.schedule.items():
            if tag in last and actions:
                action = actions.pop(0)
                if action != "ok":
                    self.tripped.set()
                return action
        return "ok"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        refused = sorted(self.reject_fields & body.keys())
        action = f"reject {refused[0]}" if refused else self._action(body)
        headers = {k.lower(): v for k, v in request.headers.items()}
        arrival = len(self.seen)
        self.seen.append(Seen(time.monotonic(), body, action, headers, request.path, dict(request.query)))
        self.arrived.set()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if not await self._wait_for_release(arrival):
                self.held_too_long += 1
                return web.json_response({"error": {"message": "held too long"}}, status=500)
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            return await self._answer(request, body, action)
        finally:
            self.in_flight -= 1

    async def _wait_for_release(self, arrival: int) -> bool:
        """Hold request number ``arrival`` as ``barriers`` and ``hold`` say; False when it was held too long."""
        end = 0
        for group, size in enumerate(self.barriers):
            end += size
            if arrival < end:
                gate = self._gates.setdefault(group, asyncio.Event())
                self._group_counts[group] = self._group_counts.get(group, 0) + 1
                if self._group_counts[group] == size:
                    gate.set()
                try:
                    await asyncio.wait_for(gate.wait(), self.hold_timeout_s)
                except TimeoutError:
                    return False
                break
        if self.hold is not None:
            released = await asyncio.get_running_loop().run_in_executor(None, self.hold.wait, self.hold_timeout_s)
            return bool(released)
        return True

    async def _answer(self, request: web.Request, body: dict[str, Any], action: str) -> web.StreamResponse:
        if action.startswith("reject "):
            message = f"Unrecognized request argument supplied: {action.removeprefix('reject ')}"
            return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=400)
        if action == "ok":
            return web.json_response(self._completion(body))
        if action == "429":
            return web.json_response(
                {"error": {"message": "rate limited", "type": "rate_limit"}},
                status=429,
                headers={"Retry-After": self.retry_after},
            )
        if action == "401echo":  # some servers quote the key they refused
            key = request.headers.get("Authorization", "").removeprefix("Bearer ")
            return web.json_response({"error": {"message": f"Incorrect API key provided: {key}"}}, status=401)
        if action in ("400", "401", "404", "500", "503"):
            return web.json_response({"error": {"message": f"injected {action}"}}, status=int(action))
        if action == "hang":
            await asyncio.sleep(self.hang_s)
            return web.json_response(self._completion(body))
        if action == "drop":
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError  # the handler ends with nothing written: the client sees a dropped socket
        if action == "badjson":
            return web.Response(text='{"choices": [ {"message": ', content_type="application/json")
        if action == "nochoices":
            return web.json_response({"object": "chat.completion"})
        raise AssertionError(f"unknown action {action!r}")

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body["messages"]
        last = messages[-1]["content"]
        if len(messages) == 1:
            text = CRITERIA_TEXT
        else:
            match = _SCORE.search(last)
            score = match.group(1) if match else "5"
            text = f"1. Accuracy: 4\n2. Clarity: 4\nOverall: \\boxed{{{score}}}"
        n = 1 if self.ignore_n else int(body.get("n", 1))
        words = text.split(" ")
        choices = []
        for i in range(n):
            choice: dict[str, Any] = {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
            if body.get("logprobs"):
                top = int(body.get("top_logprobs") or 0)
                choice["logprobs"] = {
                    "content": [
                        {"token": w, "logprob": -0.5, "top_logprobs": [{"token": w, "logprob": -0.5}] * top}
                        for w in words
                    ]
                }
            choices.append(choice)
        prompt = sum(len(m["content"]) for m in messages) // 4
        return {
            "id": "cmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "x"),
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": len(words) * n,
                "total_tokens": prompt + len(words) * n,
            },
        }

    @contextlib.contextmanager
    def running(self) -> Iterator[FaultServer]:
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        self.port = free_port()
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:

            async def stop() -> None:
                current = asyncio.current_task()
                for task in asyncio.all_tasks():  # handlers still sleeping in "hang"
                    if task is not current:
                        task.cancel()
                await runner.cleanup()

            asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


LLAMA_VENV = Path(__file__).resolve().parents[1] / ".venv-llama"


def llama_cpp_python() -> str | None:
    """The interpreter that has ``llama_cpp.server``: $CERM_LLAMA_PYTHON, else ``.venv-llama`` of this checkout, else
    the running one when it has llama-cpp-python installed; None when there is none."""
    configured = os.environ.get("CERM_LLAMA_PYTHON")
    if configured:
        return configured if Path(configured).is_file() else None
    local = LLAMA_VENV / "bin" / "python"
    if (LLAMA_VENV / ".installed").is_file() and local.is_file():
        return str(local)
    return sys.executable if importlib.util.find_spec("llama_cpp") is not None else None


def require_llama_cpp() -> str:
    """The llama.cpp server's interpreter, or skip the test with the reason (a failure under ``make test``, which
    builds it: CERM_REQUIRE_LLAMA=1)."""
    import pytest

    python = llama_cpp_python()
    if python is not None:
        return python
    reason = (
        "llama.cpp's server is not available: `make venv-llama` builds it into .venv-llama "
        "(llama-cpp-python[server]); or set CERM_LLAMA_PYTHON to a python that has it"
    )
    if os.environ.get("CERM_REQUIRE_LLAMA") == "1":
        pytest.fail(reason)
    pytest.skip(reason)
    raise AssertionError("unreachable: pytest.skip raises")


@contextlib.contextmanager
def llama_cpp_server(model: Path, n_ctx: int = 4096, python: str | None = None) -> Iterator[str]:
    """Start ``python -m llama_cpp.server`` on a free port; yield its base URL; stop it. Ready in about 2 s.
    ``python`` is the interpreter to run it with (default: :func:`llama_cpp_python`)."""
    python = python or llama_cpp_python()
    if python is None:
        raise RuntimeError("no python with llama-cpp-python[server]: run `make venv-llama`")
    port = free_port()
    log = open(os.devnull, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            python,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(n_ctx),
            "--n_threads",
            "2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited early with code {proc.returncode}")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as answer:
                    json.load(answer)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("llama_cpp.server did not become ready within 120 s") from None
                time.sleep(0.25)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
