"""Sharded, resumable bulk scoring (``cerm score --shard i/n``, ``cerm merge``): deterministic shards, append-only
records, a run killed mid-way and resumed equals an uninterrupted run item for item, and merges name missing items.

The judge is the fault-injecting OpenAI-compatible test server over real HTTP (its answers are deterministic: the
score a response asks for), so a subprocess of the real command line can be killed at a known point: the server
holds one item's request and tells the test it arrived."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _openai_servers import FaultServer
from _support import SRC
from cerm import ConfigurationError, Judge, JudgeConfig
from cerm._shards import Shard, merge_shards, score_shard
from cerm.backends.openai import OpenAIBackend

pytestmark = pytest.mark.timeout(300)

EVAL = JudgeConfig(criteria_max_new_tokens=32, evaluation_max_new_tokens=32)
N_ITEMS = 23


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer().running() as srv:
        yield srv  # type: ignore[misc]


def write_input(path: Path, with_ids: bool = True) -> Path:
    rows = []
    for k in range(N_ITEMS):
        row: dict[str, Any] = {"query": f"Question {k % 5}?", "responses": [f"item-{k:03d}a score={k % 10}"]}
        row["responses"].append(f"item-{k:03d}b score={(k + 3) % 10}")
        if with_ids:
            row = {"id": f"doc-{k}", **row}
        rows.append(json.dumps(row))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def judge_for(srv: FaultServer) -> Judge:
    backend = OpenAIBackend("judge", base_url=srv.base_url, api_key="sk-test", max_attempts=2, backoff_initial=0.01)
    return Judge(backend, config=EVAL)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_shards_are_deterministic_disjoint_and_complete(tmp_path: Path, server: FaultServer) -> None:
    source = write_input(tmp_path / "in.jsonl")
    with judge_for(server) as judge:
        reports = [score_shard(judge, source, tmp_path / "out", Shard(i, 3), batch_size=4) for i in range(3)]
    assert [r.items for r in reports] == [8, 8, 7]
    assert [r.scored for r in reports] == [8, 8, 7]
    assert all(r.resumed == 0 for r in reports)
    for i, report in enumerate(reports):
        assert [rec["index"] for rec in lines(report.path)] == list(range(i, N_ITEMS, 3))
    merged = merge_shards(tmp_path / "out")
    assert merged.complete
    assert merged.written == N_ITEMS
    assert merged.errored == ()
    records = lines(merged.path)
    assert [r["id"] for r in records] == [f"doc-{k}" for k in range(N_ITEMS)]
    assert [r["scores"] for r in records] == [[float(k % 10), float((k + 3) % 10)] for k in range(N_ITEMS)]
    assert records[4]["query"] == "Question 4?"
    assert records[4]["responses"][0].startswith("item-004a")


def test_a_rerun_repeats_nothing_and_a_torn_tail_is_rescored(tmp_path: Path, server: FaultServer) -> None:
    source = write_input(tmp_path / "in.jsonl", with_ids=False)
    out = tmp_path / "out"
    with judge_for(server) as judge:
        first = score_shard(judge, source, out, "1/2", batch_size=5)
        requests = server.count()
        again = score_shard(judge, source, out, "1/2", batch_size=5)
        assert (again.resumed, again.scored, server.count()) == (first.items, 0, requests)  # nothing re-asked
        # A kill in the middle of a write leaves a torn last record: it is cut off and that item scored again.
        text = first.path.read_text(encoding="utf-8")
        torn = text[: text.rindex("\n", 0, len(text) - 1) + 1] + text.splitlines()[-1][:17]
        first.path.write_text(torn, encoding="utf-8")
        resumed = score_shard(judge, source, out, "1/2", batch_size=5)
    assert (resumed.resumed, resumed.scored) == (first.items - 1, 1)
    assert lines(first.path) == [json.loads(line) for line in text.splitlines()]
    report = merge_shards(out)
    assert report.missing == tuple(str(k) for k in range(0, N_ITEMS, 2))  # shard 0 never ran: positions as ids


def test_a_changed_input_or_bad_shard_is_refused(tmp_path: Path, server: FaultServer) -> None:
    source = write_input(tmp_path / "in.jsonl")
    with judge_for(server) as judge:
        score_shard(judge, source, tmp_path / "out", "0/4")
        source.write_text(source.read_text(encoding="utf-8") + '{"query": "q", "responses": ["r"]}\n')
        with pytest.raises(ConfigurationError, match="another input"):
            score_shard(judge, source, tmp_path / "out", "0/4")
        score_shard(judge, source, tmp_path / "mixed", "0/4")
        score_shard(judge, source, tmp_path / "mixed", "1/5")
        with pytest.raises(ConfigurationError, match="different inputs or shard counts"):
            merge_shards(tmp_path / "mixed")
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ConfigurationError):
            Shard.parse(bad)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"query": "q", "responses": ["r"]}\n{"query": "", "responses": ["r"]}\n')
    with judge_for(server) as judge, pytest.raises(ConfigurationError, match=r"broken\.jsonl:2"):
        score_shard(judge, broken, tmp_path / "b")


def test_errors_are_recorded_as_errors_and_retry_errors_rescores_them(tmp_path: Path, server: FaultServer) -> None:
    server.schedule = {"item-004a": ["503", "503"]}  # max_attempts=2: an outage for that one response
    source = write_input(tmp_path / "in.jsonl")
    out = tmp_path / "out"
    with judge_for(server) as judge:
        first = score_shard(judge, source, out, "0/1", batch_size=8)
        assert first.errored == 1
        merged = merge_shards(out)
        assert merged.errored == ("doc-4",)
        assert merged.complete
        assert lines(merged.path)[4]["scores"] == [None, 7.0]  # an ERROR is never a score
        assert lines(merged.path)[4]["judgments"][0]["status"] == "error"
        retried = score_shard(judge, source, out, "0/1", retry_errors=True)
    assert (retried.resumed, retried.scored, retried.errored) == (N_ITEMS - 1, 1, 0)
    merged = merge_shards(out)
    assert merged.errored == ()
    assert lines(merged.path)[4]["scores"] == [4.0, 7.0]
    assert len(lines(merged.path)) == N_ITEMS  # the superseded record is not merged


# -- the command line, killed and resumed ----------------------------------------------------------------------------
def cerm(*args: str, **popen: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OPENAI_API_KEY": "sk-test"}
    return subprocess.Popen(
        [sys.executable, "-m", "cerm", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def score_args(source: Path, out: Path, shard: str, url: str) -> list[str]:
    return [
        "score", "--input", str(source), "--output", str(out), "--shard", shard, "--base-url", url,
        "--model", "judge", "--batch-size", "3", "--max-new-tokens", "32", "--no-progress",
    ]  # fmt: skip


def test_a_killed_shard_resumes_to_exactly_the_uninterrupted_result(tmp_path: Path, server: FaultServer) -> None:
    source = write_input(tmp_path / "in.jsonl")
    for shard in ("0/2", "1/2"):  # the reference: both shards, uninterrupted
        done = cerm(*score_args(source, tmp_path / "ref", shard, server.base_url))
        assert done.wait(120) == 0, done.communicate()
    reference = lines(merge_shards(tmp_path / "ref").path)
    assert len(reference) == N_ITEMS

    # Shard 0 is killed (SIGKILL) while its 4th batch waits for the server; by then 3 batches are on disk.
    server.seen.clear()
    server.hang_s = 3600.0
    server.schedule = {"item-018a": ["hang"]}  # shard 0 holds items 0, 2, ..., 22: item 18 is in its 4th batch
    victim = cerm(*score_args(source, tmp_path / "out", "0/2", server.base_url))
    server.tripped.wait(120)
    assert server.tripped.is_set(), victim.communicate()
    victim.kill()
    victim.wait(30)
    shard_file = tmp_path / "out" / "shard-00000-of-00002.jsonl"
    before = lines(shard_file)
    assert [r["index"] for r in before] == list(range(0, 18, 2))
    asked_before = {tag: server.count(tag) for tag in (f"item-{k:03d}a" for k in range(0, 18, 2))}

    said = []
    for shard in ("0/2", "1/2"):  # resume shard 0 (same command), run shard 1
        done = cerm(*score_args(source, tmp_path / "out", shard, server.base_url))
        stdout, stderr = done.communicate(timeout=120)
        assert done.returncode == 0, stderr
        said.append(stdout)
    assert "12 items in shard 0/2, 9 already done, 3 scored now" in said[0]
    # Nothing scored twice: the items written before the kill were not asked for again.
    assert all(server.count(tag) == n for tag, n in asked_before.items())
    assert [r["index"] for r in lines(shard_file)] == list(range(0, N_ITEMS, 2))
    merged = cerm("merge", str(tmp_path / "out"))
    stdout, _ = merged.communicate(timeout=60)
    assert merged.returncode == 0
    assert f"{N_ITEMS} of {N_ITEMS} items" in stdout
    assert lines(tmp_path / "out" / "merged.jsonl") == reference


def test_merge_names_missing_items_and_exits_5(tmp_path: Path, server: FaultServer) -> None:
    source = write_input(tmp_path / "in.jsonl")
    done = cerm(*score_args(source, tmp_path / "out", "2/3", server.base_url))
    assert done.wait(120) == 0, done.communicate()
    merged = cerm("merge", str(tmp_path / "out"), "--output", str(tmp_path / "m.jsonl"))
    stdout, _ = merged.communicate(timeout=60)
    assert merged.returncode == 5
    assert "7 of 23 items" in stdout
    missing = [f"doc-{k}" for k in range(N_ITEMS) if k % 3 != 2]
    assert f"16 items missing: {', '.join(missing[:20])}" in stdout
    assert [r["id"] for r in lines(tmp_path / "m.jsonl")] == [f"doc-{k}" for k in range(2, N_ITEMS, 3)]
    refused = cerm("score", "--input", str(source), "--shard", "0/2", "--base-url", server.base_url)
    assert refused.wait(60) == 2
    assert "--output FOLDER" in refused.communicate()[1]
