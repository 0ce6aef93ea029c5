"""The ``cerm`` command line end to end, through a subprocess (``python -m cerm``) on the embedded demo model.

Input errors are detected before the model loads, so those cases are quick; the others load the demo model once per
process and use 8-token budgets.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from _openai_servers import FaultServer
from _support import PYTHON
from cerm import JudgeConfig
from cerm.cli import EXIT_INTERNAL, build_parser, main
from cerm.cli._common import add_judge_options, config_from_args

TINY = ["--max-new-tokens", "8", "--no-progress"]


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "cerm", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
        check=False,
    )


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr
    assert proc.stdout == ""


def _check_record(record: dict[str, object]) -> None:
    assert record["status"] in ("scored", "unscorable")
    if record["status"] == "scored":
        assert isinstance(record["score"], (int, float))
        assert 0 <= record["score"] <= 10
    else:
        assert record["score"] is None
        assert record["reason"]


# -- bad input: exit code 2 (or 3 for the model), clear messages, no traceback -------------------------------------
def test_version_and_help(cli_env: dict[str, str], tmp_path: Path) -> None:
    version = run_cli(["--version"], cli_env, tmp_path)
    assert version.returncode == 0
    assert version.stdout.startswith("cerm ")
    for command in ("score", "rerank"):
        helped = run_cli([command, "--help"], cli_env, tmp_path)
        assert helped.returncode == 0
        assert "--max-new-tokens" in helped.stdout
    bare = run_cli([], cli_env, tmp_path)
    assert bare.returncode == 2


def test_missing_input_file(cli_env: dict[str, str], tmp_path: Path) -> None:
    proc = run_cli(["score", "--input", str(tmp_path / "nope.jsonl"), *TINY], cli_env, tmp_path)
    assert_clean_error(proc, 2, "input file not found", "nope.jsonl")
    proc = run_cli(["rerank", "--input", str(tmp_path / "nope.jsonl"), *TINY], cli_env, tmp_path)
    assert_clean_error(proc, 2, "input file not found")


def test_malformed_json_line_names_file_and_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "responses": ["a"]}\n{"query": "q", "responses": ["a"\n', encoding="utf-8")
    proc = run_cli(["score", "--input", str(bad), *TINY], cli_env, tmp_path)
    assert_clean_error(proc, 2, f"{bad}:2", "malformed JSON")


def test_empty_response_list(cli_env: dict[str, str], tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "empty.jsonl", [{"query": "q", "responses": ["a"]}, {"query": "q", "responses": []}])
    proc = run_cli(["score", "--input", str(path), *TINY], cli_env, tmp_path)
    assert_clean_error(proc, 2, f"{path}:2", "'responses' is an empty list")
    proc = run_cli(["score", "--query", "q", *TINY], cli_env, tmp_path)
    assert_clean_error(proc, 2, "no responses")
    path = write_jsonl(tmp_path / "empty-rr.jsonl", [{"query": "q", "candidates": []}])
    proc = run_cli(["rerank", "--input", str(path), *TINY], cli_env, tmp_path)
    assert_clean_error(proc, 2, f"{path}:1", "'candidates' is an empty list")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (["not", "an", "object"], "expected a JSON object"),
        ({"responses": ["a"]}, "'query' must be a non-empty string"),
        ({"query": "  ", "responses": ["a"]}, "'query' must be a non-empty string"),
        ({"query": "q", "responses": "a"}, "'responses' must be a list of strings"),
        ({"query": "q", "responses": ["a", 3]}, "'responses'[1] must be a string, got int"),
        ({"query": "q", "responses": ["bad \ud800"]}, "'responses'[0] is not valid Unicode"),
    ],
)
def test_invalid_rows(cli_env: dict[str, str], tmp_path: Path, row: object, message: str) -> None:
    path = tmp_path / "rows.jsonl"
    # json.dumps escapes the lone surrogate as "\ud800", exactly what a producer in another language may write.
    path.write_text(json.dumps({"query": "fine", "responses": ["ok"]}) + "\n\n" + json.dumps(row) + "\n")
    proc = run_cli(["score", "--input", str(path), *TINY], cli_env, tmp_path)
    assert_clean_error(proc, 2, f"{path}:3", message)


def test_unknown_backend(cli_env: dict[str, str], tmp_path: Path) -> None:
    proc = run_cli(["score", "-q", "q", "-r", "a", "--backend", "nonesuch", *TINY], cli_env, tmp_path)
    assert_clean_error(proc, 2, "unknown backend 'nonesuch'")


def test_bad_option_values(cli_env: dict[str, str], tmp_path: Path) -> None:
    proc = run_cli(["score", "-q", "q", "-r", "a", "-k", "0", *TINY], cli_env, tmp_path)
    assert_clean_error(proc, 2, "k must be >= 1")


def test_model_that_cannot_be_found(cli_env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    proc = run_cli(["score", "-q", "q", "-r", "a", "--model", str(missing), *TINY], cli_env, tmp_path)
    assert_clean_error(proc, 3, "could not load model", "no-such-model")


# -- real runs on the demo model ---------------------------------------------------------------------------------
@pytest.mark.model
def test_score_query_and_responses(cli_env: dict[str, str], tmp_path: Path) -> None:
    proc = run_cli(["score", "--query", "What is 2+2?", "--response", "4", "--response", "5", *TINY], cli_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["query"] == "What is 2+2?"
    assert record["responses"] == ["4", "5"]
    assert len(record["scores"]) == 2
    assert [j["index"] for j in record["judgments"]] == [0, 1]
    for judgment, score in zip(record["judgments"], record["scores"], strict=True):
        _check_record(judgment)
        assert judgment["score"] == score


@pytest.mark.model
def test_the_readme_main_command_prints_real_scores_on_the_trained_demo_judge(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    # The README's first command, as a new user types it: the default model (the trained demo judge), default budgets,
    # plain protocol (no forced readout). Before the trained adapter this printed "scores": [null, null].
    command = ["score", "--query", "What is 17 * 23?", "--response", "17 * 23 = 391.", "--response", "17 * 23 = 381."]
    proc = run_cli([*command, "--no-progress"], cli_env, tmp_path, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert [j["status"] for j in record["judgments"]] == ["scored", "scored"], record
    assert all(isinstance(score, (int, float)) and 0 <= score <= 10 for score in record["scores"]), record
    assert all("score_source" not in j for j in record["judgments"]), record  # its own boxed score, no readout


@pytest.mark.model
def test_score_jsonl_in_jsonl_out(cli_env: dict[str, str], tmp_path: Path) -> None:
    rows = [
        {"id": "b-2", "query": "Name a prime number.", "responses": ["7", "9"], "meta": {"source": "unit"}},
        {"id": "a-1", "query": "Say hello in Spanish.", "responses": ["Hola", "  "]},
        {"id": "c-3", "query": "Name a prime number.", "responses": ["2"]},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    target = tmp_path / "out" / "scored.jsonl"
    proc = run_cli(["score", "--input", str(source), "--output", str(target), "--full", *TINY], cli_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # results went to the file
    assert target.is_file()
    out = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in out] == ["b-2", "a-1", "c-3"]  # input order, ids kept
    assert out[0]["meta"] == {"source": "unit"}  # extra fields pass through
    for original, record in zip(rows, out, strict=True):
        assert record["query"] == original["query"]
        assert record["responses"] == original["responses"]
        assert len(record["scores"]) == len(original["responses"])
        for judgment in record["judgments"]:
            _check_record(judgment)
            assert judgment["provenance"]["backend"] == "hf"  # --full adds provenance and the judge's texts
    whitespace = out[1]["judgments"][1]
    assert whitespace["status"] == "unscorable"
    assert "empty" in whitespace["reason"]
    assert whitespace["chains"] == []
    assert out[0]["judgments"][0]["chains"][0]["criteria"]["text"]


@pytest.mark.model
def test_rerank_jsonl(cli_env: dict[str, str], tmp_path: Path) -> None:
    rows = [
        {"id": 1, "query": "Name a prime number.", "candidates": ["9", "7"]},
        {"id": 2, "query": "Say hello in Spanish.", "responses": ["Hola", "Bonjour"]},  # alias accepted
    ]
    source = write_jsonl(tmp_path / "cands.jsonl", rows)
    target = tmp_path / "best.jsonl"
    proc = run_cli(["rerank", "-i", str(source), "-o", str(target), *TINY], cli_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in out] == [1, 2]
    assert out[1]["candidates"] == ["Hola", "Bonjour"]
    for record in out:
        n = len(record["candidates"])
        assert sorted(record["ranking"]) == list(range(n))
        assert len(record["scores"]) == n
        scored = [s for s in record["scores"] if s is not None]
        if scored:
            assert record["best_score"] == max(scored)
            assert record["best"] == record["candidates"][record["best_index"]]
            # Ties go to the earliest candidate.
            assert record["best_index"] == record["scores"].index(max(scored))
        else:
            assert record["best_index"] is None
            assert record["best"] is None
            assert record["best_score"] is None


@pytest.mark.model
def test_strict_with_unscorable_exits_4(cli_env: dict[str, str], tmp_path: Path) -> None:
    # A whitespace-only response is UNSCORABLE before any evaluation: with --strict that is exit code 4, and the
    # result is still written.
    proc = run_cli(["score", "-q", "What is 2+2?", "-r", "   ", "--strict", *TINY], cli_env, tmp_path)
    assert proc.returncode == 4, proc.stderr
    record = json.loads(proc.stdout)
    assert record["scores"] == [None]
    assert record["judgments"][0]["status"] == "unscorable"


# -- the judge options mirror JudgeConfig ------------------------------------------------------------------------------
def _help(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", ["score", "rerank", "serve", "eval"])
def test_every_judge_config_field_is_an_option(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(command, capsys)
    for spec in dataclasses.fields(JudgeConfig):
        flag = "--" + spec.name.replace("_", "-")
        assert flag in text, f"cerm {command} has no {flag} (JudgeConfig.{spec.name})"
        assert spec.metadata["help"].split()[0] in text  # the field's own description is the help
    assert "-k N" in text  # historical spellings stay
    assert "--max-new-tokens" in text


def test_options_reach_the_config_with_their_types() -> None:
    parser = build_parser()
    args = parser.parse_args(
        [
            "score",
            "--top-p",
            "0.9",
            "--scaling-temperature",
            "0.5",
            "--max-response-tokens",
            "64",
            "-k",
            "2",
            "--scaling",
            "grid",
            "--forced-readout",
            "--readout-min-mass",
            "0.25",
            "--max-new-tokens",
            "99",
        ]
    )
    config = config_from_args(args)
    assert config == JudgeConfig(
        top_p=0.9,
        scaling_temperature=0.5,
        max_response_tokens=64,
        k=2,
        scaling="grid",
        forced_readout=True,
        readout_min_mass=0.25,
        criteria_max_new_tokens=99,
        evaluation_max_new_tokens=99,
    )
    # Leaving every option out gives JudgeConfig's own defaults, whatever they are.
    assert config_from_args(parser.parse_args(["rerank"])) == JudgeConfig()
    with pytest.raises(SystemExit):
        parser.parse_args(["score", "--overlong", "shorten"])  # Literal choices are enforced


def test_a_field_added_to_the_config_appears_on_the_command_line_by_itself() -> None:
    extended = dataclasses.make_dataclass(
        "ExtendedConfig",
        [
            ("new_knob", int, dataclasses.field(default=3, metadata={"help": "a brand new setting"})),
            ("new_mode", Literal["a", "b"], dataclasses.field(default="a")),  # no help metadata: still an option
        ],
        bases=(JudgeConfig,),
        frozen=True,
    )
    parser = argparse.ArgumentParser()
    add_judge_options(parser, config_class=extended)
    text = parser.format_help()
    assert "--new-knob N" in text
    assert "a brand new setting (default: 3)" in text
    assert "--new-mode {a,b}" in text
    config = config_from_args(parser.parse_args(["--new-knob", "7", "--new-mode", "b", "--top-p", "0.5"]))
    assert isinstance(config, extended)
    assert (config.new_knob, config.new_mode, config.top_p) == (7, "b", 0.5)  # type: ignore[attr-defined]
    # A sub-command can respell a field's option (e.g. when --seed means something else there).
    renamed = argparse.ArgumentParser()
    add_judge_options(renamed, flags={"seed": ["--judge-seed"]})
    assert config_from_args(renamed.parse_args(["--judge-seed", "5"])).seed == 5
    with pytest.raises(SystemExit):
        renamed.parse_args(["--seed", "5"])


# -- exit codes: 1 is a bug, 2 the user's input, 5 failed generations -----------------------------------------------
def test_a_bug_exits_1_with_a_logged_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    import cerm.cli._score

    def buggy(args: argparse.Namespace) -> int:
        raise ValueError("an index went wrong inside cerm")

    monkeypatch.setattr(cerm.cli._score, "run", buggy)
    assert main(["score", "-q", "q", "-r", "a"]) == EXIT_INTERNAL == 1
    err = capsys.readouterr().err
    assert "internal error: ValueError: an index went wrong inside cerm" in err
    assert "a bug in cerm" in err
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert logged, "the traceback must be logged"
    assert logged[0].exc_info is not None
    assert logged[0].exc_info[0] is ValueError


def test_bad_settings_exit_2_not_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", "-q", "q", "-r", "a", "--backend", "mock", "--backend-arg", "colour=blue"]) == 2
    assert "has no setting colour" in capsys.readouterr().err
    assert main(["score", "-q", "q", "-r", "a", "--top-p", "0"]) == 2  # JudgeConfig refuses it: the user's input
    assert main(["serve", "--unscorable-reward", "nan"]) == 2


@pytest.fixture
def outage() -> Iterator[FaultServer]:
    # Every attempt at judging a response tagged "boom" fails at the judge's server; everything else is answered.
    with FaultServer(schedule={"boom": ["500"] * 10}).running() as server:
        yield server


def _openai_args(server: FaultServer) -> list[str]:
    return [
        "--backend",
        "openai",
        "--model",
        "judge-model",
        "--backend-arg",
        f"base_url={server.base_url}",
        "--backend-arg",
        "api_key=sk-test",
        "--backend-arg",
        "max_attempts=1",
        "--max-new-tokens",
        "32",
        "--no-progress",
    ]


@pytest.mark.parametrize("strict", [False, True])
def test_score_exits_5_when_items_errored(
    cli_env: dict[str, str], tmp_path: Path, outage: FaultServer, strict: bool
) -> None:
    args = ["score", "-q", "What is 2+2?", "-r", "score=7 four", "-r", "score=3 boom", *_openai_args(outage)]
    proc = run_cli([*args, "--strict"] if strict else args, cli_env, tmp_path)
    assert proc.returncode == 5, proc.stderr
    record = json.loads(proc.stdout)  # the results are still written
    assert [j["status"] for j in record["judgments"]] == ["scored", "error"]
    assert record["scores"] == [7.0, None]
    assert "HTTP 500" in record["judgments"][1]["reason"]
    assert "errored" in proc.stderr
    # The same run without the failing response exits 0.
    clean = run_cli(["score", "-q", "What is 2+2?", "-r", "score=7 four", *_openai_args(outage)], cli_env, tmp_path)
    assert clean.returncode == 0, clean.stderr


def test_eval_exits_5_when_items_errored_and_a_rerun_judges_them_again(
    cli_env: dict[str, str], tmp_path: Path, outage: FaultServer
) -> None:
    data = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"id": "ok", "prompt": "Q1", "chosen": "score=8 a", "rejected": ["score=2 b"]},
            {"id": "down", "prompt": "Q2", "chosen": "score=9 boom", "rejected": ["score=1 c"]},
        ],
    )
    args = ["eval", "--data", str(data), "--out", str(tmp_path / "run"), *_openai_args(outage)]
    proc = run_cli(args, cli_env, tmp_path)
    assert proc.returncode == 5, proc.stderr
    assert "1 item(s) errored" in proc.stderr
    # The outage is over: the rerun judges only the errored item again and exits 0.
    outage.schedule = {}
    again = run_cli(args, cli_env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "item(s) errored" not in again.stderr
    assert "(1 resumed)" in again.stderr  # the scored item was kept, not judged again


def test_rerank_exits_5_when_items_errored(cli_env: dict[str, str], tmp_path: Path, outage: FaultServer) -> None:
    source = write_jsonl(tmp_path / "c.jsonl", [{"query": "Q", "candidates": ["score=4 a", "score=9 boom"]}])
    proc = run_cli(["rerank", "-i", str(source), *_openai_args(outage)], cli_env, tmp_path)
    assert proc.returncode == 5, proc.stderr
    record = json.loads(proc.stdout)
    assert record["best_index"] == 0  # the errored candidate never wins
    assert [j["status"] for j in record["judgments"]] == ["scored", "error"]
