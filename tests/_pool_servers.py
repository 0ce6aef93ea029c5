"""A fault-injecting test server in its own process, for kill tests: SIGKILL is a real endpoint death.

The child prints its port, then ``arrived`` when the first request comes in; it holds every request (a barrier that
never fills), so requests sent to it are in flight when the test kills it. The test synchronises on those lines, not
on time.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_CHILD = """
import sys
from _openai_servers import FaultServer
server = FaultServer(barriers=[10**9], hold_timeout_s=3600.0)
with server.running():
    print(server.port, flush=True)
    server.arrived.wait()
    print("arrived", flush=True)
    sys.stdin.read()  # until the test closes our stdin (or kills us)
"""


@dataclass
class DoomedServer:
    proc: subprocess.Popen[str]
    base_url: str

    def wait_for_first_request(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == "arrived", f"the doomed server said {line!r}"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


@contextlib.contextmanager
def doomed_server() -> Iterator[DoomedServer]:
    """A held-requests test server in a child process, ready to be killed mid-run."""
    paths = [str(Path(__file__).resolve().parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield DoomedServer(proc, f"http://127.0.0.1:{port}/v1")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
