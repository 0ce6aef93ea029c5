"""Finer scores in the Judge: the expected score from log-probabilities, and the forced readout for judges that do not
close the format; each score records how it was read. Mock cases cover the bookkeeping; the demo model shows the real
thing: the plain protocol gives UNSCORABLE on it, the forced readout gives numbers marked as forced."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cerm import ConfigurationError, Judge, JudgeConfig, SamplingParams, SQLiteCriteriaCache, Status
from cerm.backends import Backend, Completion, MockBackend, TokenLogprob
from cerm.protocol import FORCED_READOUT_SUFFIX, Conversation

CRITERIA = "Analysis.\n[Start of Criteria]\n1. Accuracy: correct facts\n[End of Criteria]"
L = math.log


def _tokens(text: str) -> list[TokenLogprob]:
    """One token per character (a digit-splitting tokenizer), certain except where a score digit follows a brace."""
    return [TokenLogprob(ch, 0.0, ((ch, 0.0),)) for ch in text]


def _evaluation(score_tokens: list[TokenLogprob], tail: str = "}$") -> Completion:
    head = "Accuracy: fine $\\boxed{4}$\nOverall $\\boxed{"
    tokens = _tokens(head) + score_tokens + _tokens(tail)
    return Completion("".join(t.token for t in tokens), "stop", 10, len(tokens), tuple(tokens))


def _digit(token: str, p: float, *alternatives: tuple[str, float]) -> TokenLogprob:
    return TokenLogprob(token, L(p), tuple((t, L(q)) for t, q in ((token, p), *alternatives)))


def _responder(by_response: dict[str, Completion | str]) -> MockBackend:
    def respond(conversation: Conversation, params: SamplingParams, sample: int) -> str | Completion:
        if len(conversation) == 1:
            return CRITERIA
        response = conversation[2]["content"].split("[Start of Response]\n")[1].split("\n[End of Response]")[0]
        if conversation[-1]["role"] == "assistant":  # the forced readout continues the partial assistant turn
            assert conversation[-1]["content"].endswith(FORCED_READOUT_SUFFIX)
            assert params.temperature == 0.0
            continuation = [_digit("6", 0.5, ("8", 0.5)), _digit("}", 1.0)]
            if response == "weak":  # mostly non-score tokens after the forced prefix
                continuation = [_digit("N", 0.8, ("3", 0.2)), _digit("/", 1.0)]
            text = "".join(t.token for t in continuation)
            return Completion(text, "length", 5, 2, tuple(continuation) if params.top_logprobs else None)
        return by_response[response]

    return MockBackend(respond, supports_logprobs=True)


def test_default_config_is_unchanged_and_records_parsed() -> None:
    backend = _responder({"a": _evaluation([_digit("7", 0.6, ("8", 0.4))])})
    judgment = Judge(backend).judge("q", ["a"])[0]
    assert judgment.score == 7.0
    assert judgment.score_source == "parsed"
    assert judgment.chains[0].readout is None
    assert judgment.provenance.score_readout == "parsed"
    assert not judgment.forced
    assert backend.calls[1][1].top_logprobs is None  # no log-probabilities asked for by default


def test_expected_mode_breaks_ties_between_equal_parsed_scores() -> None:
    # Both evaluations write 7; their probabilities differ, so their expected scores differ.
    backend = _responder(
        {
            "a": _evaluation([_digit("7", 0.6, ("8", 0.4))]),
            "b": _evaluation([_digit("7", 0.6, ("6", 0.4))]),
            "ten": _evaluation([_digit("1", 0.9, ("9", 0.1)), _digit("0", 1.0)]),
        }
    )
    judge = Judge(backend, config=JudgeConfig(score_readout="expected"))
    a, b, ten = judge.judge("q", ["a", "b", "ten"])
    assert backend.calls[1][1].top_logprobs == 20
    assert a.score == pytest.approx(7.4)
    assert b.score == pytest.approx(6.6)
    assert ten.score == pytest.approx(9.9)  # "1","0" is 10 by the chain rule, not 1
    assert a.score_source == "expected"
    assert a.evaluation is not None
    assert a.evaluation.overall == 7.0  # the parsed value stays in the evaluation
    assert a.chains[0].readout is not None
    assert a.chains[0].readout.greedy == 7.0
    assert a.provenance.score_readout == "expected"
    # Parsed mode on the same outputs: a tie.
    plain = Judge(backend).compare("q", "a", "b")
    assert plain.winner == "tie"
    assert Judge(backend, config=JudgeConfig(score_readout="expected")).compare("q", "a", "b").winner == "a"


def test_expected_mode_keeps_the_parsed_score_when_mass_is_low() -> None:
    backend = _responder({"a": _evaluation([_digit("7", 0.3, ("N", 0.7))])})
    judgment = Judge(backend, config=JudgeConfig(score_readout="expected", readout_min_mass=0.5)).judge("q", ["a"])[0]
    assert judgment.score == 7.0
    assert judgment.score_source == "parsed"
    readout = judgment.chains[0].readout
    assert readout is not None
    assert not readout.trusted
    assert any("parsed score kept" in w and "30.0%" in w for w in judgment.warnings)


def test_expected_mode_without_logprobs_is_a_configuration_error() -> None:
    backend = MockBackend(lambda c, p, i: CRITERIA if len(c) == 1 else "$\\boxed{7}$")
    with pytest.raises(ConfigurationError, match="log-probabilities"):
        Judge(backend, config=JudgeConfig(score_readout="expected")).judge("q", ["a"])
    no_prefill = MockBackend(lambda c, p, i: "x", supports_prefill=False)
    with pytest.raises(ConfigurationError, match="prefill"):
        Judge(no_prefill, config=JudgeConfig(forced_readout=True)).judge("q", ["a"])
    with pytest.raises(ConfigurationError, match="score_readout"):
        JudgeConfig(score_readout="mean")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="readout_min_mass"):
        JudgeConfig(readout_min_mass=2.0)


def test_forced_readout_only_for_unclosed_evaluations_and_marked() -> None:
    backend = _responder(
        {
            "closed": _evaluation([_digit("7", 1.0)]),
            "open": "The user's response is: the user's response is:",
            "weak": "I cannot say.",
        }
    )
    judge = Judge(backend, config=JudgeConfig(forced_readout=True))
    closed, opened, weak = judge.judge("q", ["closed", "open", "weak"])
    assert len(backend.calls) == 3  # criteria, evaluations, one forced-readout request
    assert len(backend.calls[2][0]) == 2  # only the two unclosed evaluations were continued
    assert closed.score == 7.0
    assert closed.score_source == "parsed"
    assert opened.score == 6.0  # the value written after the forced prefix
    assert opened.score_source == "forced_parsed"
    assert opened.forced
    assert opened.status is Status.SCORED
    assert opened.chains[0].readout is not None
    assert opened.evaluation is not None
    assert opened.evaluation.overall is None  # the protocol itself found no score
    assert any("forced readout" in w for w in opened.warnings)
    assert weak.score is None  # the continuation "N/" is not a score
    assert weak.reason is not None
    assert "forced readout" in weak.reason
    assert weak.provenance.forced_readout


def test_forced_expected_readout_and_its_mass_check() -> None:
    backend = _responder({"open": "no format", "weak": "I cannot say."})
    judge = Judge(backend, config=JudgeConfig(forced_readout=True, score_readout="expected"))
    opened, weak = judge.judge("q", ["open", "weak"])
    assert opened.score == pytest.approx(7.0)  # 0.5 * 6 + 0.5 * 8
    assert opened.score_source == "forced_expected"
    assert weak.score is None  # only 20% of the mass is on score tokens: no number invented
    assert weak.reason is not None
    assert "20.0%" in weak.reason
    assert weak.chains[0].readout is not None


def test_evaluate_alone_never_applies_a_readout() -> None:
    backend = _responder({"open": "no format"})
    judge = Judge(backend, config=JudgeConfig(forced_readout=True))
    evaluation = judge.evaluate("q", CRITERIA, "open")
    assert evaluation.overall is None  # Evaluation.overall is always the parsed value


# -- the real model -------------------------------------------------------------------------------------------------


@pytest.mark.model
def test_hf_prefill_continues_the_assistant_message(demo_backend: Backend) -> None:
    conversation: Conversation = [
        {"role": "user", "content": "Count from one to five."},
        {"role": "assistant", "content": "One, two, three,"},
    ]
    rendered = demo_backend.render(conversation)  # type: ignore[attr-defined]
    assert rendered.endswith("One, two, three,")
    assert demo_backend.supports_prefill
    out = demo_backend.generate([conversation], SamplingParams(max_new_tokens=4))[0][0]
    assert out.finish_reason in ("stop", "length")
    assert "four" in out.text.lower()


@pytest.mark.model
def test_demo_model_plain_is_unscorable_forced_gives_marked_numbers(demo_backend: Backend) -> None:
    query = "What is the capital of France?"
    responses = ["Paris is the capital of France.", "The capital of France is Berlin."]
    base = JudgeConfig(criteria_max_new_tokens=24, evaluation_max_new_tokens=16)
    plain = Judge(demo_backend, config=base).judge(query, responses)
    assert all(j.status is Status.UNSCORABLE for j in plain)
    assert all(j.score_source is None for j in plain)

    forced = Judge(demo_backend, config=base.with_(forced_readout=True, score_readout="expected")).judge(
        query, responses
    )
    for judgment in forced:
        assert judgment.status is Status.SCORED, judgment.reason
        assert judgment.score is not None
        assert 0.0 <= judgment.score <= 10.0
        assert judgment.score_source == "forced_expected"
        assert judgment.forced
        readout = judgment.chains[0].readout
        assert readout is not None
        assert readout.method == "forced"
        assert readout.trusted
        assert readout.mass >= 0.5
        assert judgment.evaluation is not None
        assert judgment.evaluation.overall is None  # the model's own text still has no score
    # Same evaluation texts as the plain run: the readout only appends a continuation.
    assert [j.evaluation.text for j in forced] == [j.evaluation.text for j in plain]  # type: ignore[union-attr]


@pytest.mark.model
def test_cli_readout_and_cache_flags(tmp_path: Path) -> None:
    cache = tmp_path / "crit.sqlite"
    args = [sys.executable, "-m", "cerm", "score", "--query", "What is 2+2?", "--response", "4", "--response", "5"]
    args += ["--criteria-max-new-tokens", "16", "--evaluation-max-new-tokens", "8", "--no-progress"]
    args += ["--score-readout", "expected", "--forced-readout", "--criteria-cache", str(cache)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    flat = [r for rec in records for r in (rec.get("judgments") or rec.get("results") or [rec])]
    scored = [r for r in flat if r.get("status") == "scored"]
    assert scored, done.stdout
    assert all(r["score_source"] == "forced_expected" for r in scored)
    assert cache.is_file()
    with SQLiteCriteriaCache(cache) as opened:
        assert len(opened) == 1
