"""The adaptive tie-break on the command line: ``--tie-break`` and the ``--tie-*`` options of ``cerm rerank``,
``cerm eval`` and ``cerm serve``, run through the real parser and sub-commands (``cerm.cli.main``) with a scripted
judge whose every answer is known, so the samples each candidate gets are exact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from _support import query_of, realistic_criteria, realistic_evaluation, response_of
from cerm import Judge, SamplingParams
from cerm.backends import MockBackend
from cerm.cli import build_parser, main
from cerm.protocol import Conversation


def _backend(greedy: dict[str, float], sampled: dict[str, float]) -> MockBackend:
    """The greedy criteria set with a greedy evaluation gives ``greedy[response]``; any sampled chain (a sampled
    criteria set, or a sampled evaluation) gives ``sampled[response]`` (default: the greedy score again). A response is
    found by name inside the text the judge sees, so a server's prompt prefix does not matter."""

    def named(response: str, table: dict[str, float]) -> float:
        return next(value for name, value in table.items() if name in response)

    def respond(conversation: Conversation, params: SamplingParams, sample: int) -> str:
        if len(conversation) == 1:
            tag = "greedy" if params.greedy else f"sampled {params.seed}/{sample}"
            return realistic_criteria(query_of(conversation)) + f"\n(set {tag})"
        response = response_of(conversation)
        first = params.greedy and conversation[1]["content"].endswith("(set greedy)")
        value = named(response, greedy) if first else named(response, {**greedy, **sampled})
        return realistic_evaluation(f"{value:g}")

    return MockBackend(respond)


@pytest.fixture
def scripted_cli(monkeypatch: pytest.MonkeyPatch) -> list[MockBackend]:
    """Every sub-command's judge is a scripted one, built from the command line's own JudgeConfig; the backends made
    are listed (one per command run) so a test can count the generations."""
    import cerm.cli._common as common

    made: list[MockBackend] = []
    greedy = {"tied_a": 8.0, "tied_b": 8.0, "low": 6.0, "top": 9.0, "same_a": 7.0, "same_b": 7.0}
    sampled = {"tied_a": 7.0, "tied_b": 9.0}

    def scripted_judge(args: Any) -> Judge:
        backend = _backend(greedy, sampled)
        made.append(backend)
        return Judge(backend, config=common.config_from_args(args))

    import cerm.cli._rerank
    import cerm.cli._serve

    # rerank and serve hold their own reference (imported by name); eval looks it up in _common when it runs.
    for module in (common, cerm.cli._rerank, cerm.cli._serve):
        monkeypatch.setattr(module, "judge_from_args", scripted_judge)
    return made


def _generations(backend: MockBackend) -> int:
    return sum(len(conversations) * params.n for conversations, params in backend.calls)


def _rerank(tmp_path: Path, *options: str) -> list[dict[str, Any]]:
    source = tmp_path / "in.jsonl"
    rows = [
        {"query": "q1", "candidates": ["tied_a", "tied_b", "low"]},  # tied at the top: tied_b leads once sampled
        {"query": "q2", "candidates": ["low", "top"]},  # no tie: judged once
        {"query": "q3", "candidates": ["same_a", "same_b", "low"]},  # tied, and every sample says so again
    ]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}.jsonl"
    assert main(["rerank", "-i", str(source), "-o", str(out), "--no-progress", "--seed", "3", *options]) == 0
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_rerank_tie_break_samples_only_the_tied_candidates(tmp_path: Path, scripted_cli: list[MockBackend]) -> None:
    plain = _rerank(tmp_path)
    assert [row["best_index"] for row in plain] == [0, 1, 0]  # ties go to the earliest candidate
    assert all("tie_break" not in row for row in plain)
    plain_cost = _generations(scripted_cli[-1])
    assert plain_cost == 3 + 8  # one criteria set per query, one evaluation per candidate

    lines = _rerank(tmp_path, "--tie-break", "--tie-max-chains", "3")
    assert [row["best_index"] for row in lines] == [1, 1, 0]
    first, second, third = (row["tie_break"] for row in lines)
    # q1: one round (a sampled criteria set, then tied_a and tied_b only); tied_b leads (8.5 against 7.5).
    assert [c["chains"] for c in first["candidates"]] == [2, 2, 1]
    assert [c["added"] for c in first["candidates"]] == [1, 1, 0]
    assert [c["key"] for c in first["candidates"]] == [7.5, 8.5, 6.0]
    assert (first["rounds"], first["stopped"], first["order"]) == (1, "separated", [1, 0, 2])
    assert "not tied" in first["candidates"][2]["reason"]
    assert lines[0]["ranking"] == [1, 0, 2]
    assert lines[0]["scores"] == [7.5, 8.5, 6.0]  # means over all chains of each candidate
    # q2: nothing tied, nothing spent.
    assert (second["rounds"], second["stopped"], second["generations"]) == (0, "no tie", 0)
    assert [c["chains"] for c in second["candidates"]] == [1, 1]
    # q3: still tied at --tie-max-chains 3: two rounds, and the record says both are still in contention.
    assert [c["chains"] for c in third["candidates"]] == [3, 3, 1]
    assert (third["rounds"], third["stopped"]) == (2, "max_chains")
    assert [c["contending"] for c in third["candidates"]] == [True, True, False]
    # Extra cost: q1's round (1 criteria set + 2 evaluations) and q3's two rounds (2 x (1 + 2)), nothing else.
    assert first["generations"] + third["generations"] == 3 + 6
    assert _generations(scripted_cli[-1]) == plain_cost + 9


def test_rerank_tie_budget_and_evaluation_samples(tmp_path: Path, scripted_cli: list[MockBackend]) -> None:
    # A budget of 4 extra generations per decision: q3's first round costs 3, a second would cost 3 more: refused.
    lines = _rerank(tmp_path, "--tie-break", "--tie-budget", "4")
    third = lines[2]["tie_break"]
    assert (third["rounds"], third["stopped"], third["generations"]) == (1, "budget", 3)
    assert (lines[0]["tie_break"]["stopped"], lines[0]["best_index"]) == ("separated", 1)
    # --tie-sample evaluations: one more sampled evaluation under the first criteria set, no new criteria set.
    lines = _rerank(tmp_path, "--tie-break", "--tie-sample", "evaluations", "--tie-max-rounds", "1")
    first = lines[0]["tie_break"]
    assert (first["rounds"], first["generations"]) == (1, 2)
    assert lines[0]["best_index"] == 1
    criteria_calls = [params for conversations, params in scripted_cli[-1].calls if len(conversations[0]) == 1]
    assert len(criteria_calls) == 1  # the first, batched over the three queries; no sampled criteria set


def test_tie_options_are_checked_before_anything_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"query": "q", "candidates": ["a", "b"]}) + "\n", encoding="utf-8")
    base = ["rerank", "-i", str(source), "--model", "no-such-model-for-this-test"]
    assert main([*base, "--tie-max-chains", "3", "--no-tie-expected-first"]) == 2
    assert "--tie-max-chains, --tie-expected-first set a tie-break that is off: add --tie-break" in (
        capsys.readouterr().err
    )
    assert main([*base, "--tie-break", "--tie-max-chains", "0"]) == 2
    assert "TieBreak.max_chains must be >= 1, got 0" in capsys.readouterr().err
    assert main([*base, "--tie-break", "--tie-margin", "-1"]) == 2
    assert "TieBreak.margin must be a finite number >= 0" in capsys.readouterr().err
    # A tie-break needs sampled chains: greedy everywhere is refused before the model loads too.
    assert main([*base, "--tie-break", "--scaling-temperature", "0"]) == 2
    assert "set temperature or scaling_temperature above 0" in capsys.readouterr().err


def test_every_tie_break_field_is_an_option_of_the_three_commands() -> None:
    import dataclasses

    from cerm import TieBreak

    parser = build_parser()
    for command in ("rerank", "eval", "serve"):
        required = ["--unscorable-reward", "0"] if command == "serve" else []
        required += ["--out", "x"] if command == "eval" else []
        args = parser.parse_args([command, *required, "--tie-break", "--tie-samples-per-round", "2"])
        from cerm.cli._common import tie_break_from_args

        assert tie_break_from_args(args) == TieBreak(samples_per_round=2)
        defaults = parser.parse_args([command, *required])
        assert tie_break_from_args(defaults) is None
        help_text = parser._subparsers._group_actions[0].choices[command].format_help()  # type: ignore[union-attr]
        for spec in dataclasses.fields(TieBreak):
            assert "--tie-" + spec.name.replace("_", "-") in help_text


def test_eval_tie_break_decides_the_tied_pair(tmp_path: Path, scripted_cli: list[MockBackend]) -> None:
    mine = tmp_path / "pairs.jsonl"
    items = [
        {"id": "tied", "prompt": "q1", "chosen": "tied_b", "rejected": ["tied_a"]},
        {"id": "clear", "prompt": "q2", "chosen": "top", "rejected": ["low"]},
    ]
    mine.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    common = ["eval", "--data", str(mine), "--no-plots", "--no-progress", "--seed", "1"]

    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text(encoding="utf-8"))
    assert plain["pairwise"]["accuracy"] == 0.75  # the tie earns half (--tie-policy half)

    out = tmp_path / "ties"
    assert main([*common, "--out", str(out), "--tie-break", "--tie-max-chains", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["pairwise"]["accuracy"] == 1.0
    manifest = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert manifest["tie_break"]["max_chains"] == 2
    records = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    tied = next(r for r in records if r["id"] == "tied")
    assert [c["score"] for c in tied["candidates"]] == [8.0, 8.0]  # the first scores, comparable with a plain run
    assert [c["tie_break"]["chains"] for c in tied["candidates"]] == [2, 2]
    assert [c["tie_break"]["score"] for c in tied["candidates"]] == [8.5, 7.5]
    clear = next(r for r in records if r["id"] == "clear")
    assert [c["tie_break"]["chains"] for c in clear["candidates"]] == [1, 1]
    # A resume under other tie-break settings is refused, not mixed into one run.
    assert main([*common, "--out", str(out), "--tie-break", "--tie-max-chains", "3"]) == 2


def test_serve_tie_break_separates_a_tied_group(
    monkeypatch: pytest.MonkeyPatch, scripted_cli: list[MockBackend]
) -> None:
    import uvicorn

    from cerm.integrations import RewardServer

    body = {"query": ["Q: pick tied_a", "Q: pick tied_b", "R: pick top"], "prompts": ["Q:", "Q:", "R:"]}
    answers: list[Any] = []

    def run_and_ask(app: Any, **kwargs: Any) -> None:  # in place of uvicorn.run: serve the app, send one request
        with RewardServer(app) as server:
            answers.append(httpx.post(server.url + "/get_reward", json=body, timeout=60).json())

    monkeypatch.setattr(uvicorn, "run", run_and_ask)
    base = ["serve", "--unscorable-reward", "0", "--max-wait-ms", "0", "--seed", "2"]
    assert main(base) == 0
    assert main([*base, "--tie-break", "--tie-max-chains", "2"]) == 0
    plain, tied = answers
    assert plain["rewards"] == [8.0, 8.0, 9.0]  # a GRPO group with equal rewards: no advantage
    assert tied["rewards"] == [7.5, 8.5, 9.0]  # separated by one more chain each; the untied sample untouched
    assert _generations(scripted_cli[1]) == _generations(scripted_cli[0]) + 3
