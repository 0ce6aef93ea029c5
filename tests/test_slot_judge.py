"""The ESFP-RM slot judge: the common interface, stage 1 (explanations and their failures), stage 2 (masked-LM slot
readout, multi-piece verbalizer words, truncation) and the causal-LM cloze baseline, on a tiny real masked LM."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from _support import realistic_evaluation, scripted
from cerm import (
    BackendExplainer,
    CausalSlotReader,
    CermExplainer,
    ConfigurationError,
    Judge,
    JudgeConfig,
    MaskedSlotReader,
    RewardJudge,
    SlotJudge,
    SlotJudgeConfig,
    Status,
    slot_judge_from_config,
)
from cerm._slot._encode import SlotInput, encode, special_tokens
from cerm.backends import Backend, Completion, MockBackend, SamplingParams
from cerm.protocol import PLAIN_SLOT_TEMPLATE, Conversation, SlotTemplate, Verbalizer, slot_reward

QUERY = "What is 17 + 25?"
RESPONSES = ["17 + 25 = 42.", "The answer is 41.", "42"]


def plain_judge(path: Path, **kwargs: object) -> SlotJudge:
    reader = MaskedSlotReader(str(path), template=SlotTemplate(PLAIN_SLOT_TEMPLATE), **kwargs)  # type: ignore[arg-type]
    return SlotJudge(reader)


def explaining(text_of: object) -> MockBackend:
    """A stage-1 backend answering each explanation prompt with ``text_of(response)`` (a str or a Completion)."""

    def respond(conversation: Conversation, params: SamplingParams, sample: int) -> str | Completion:
        response = conversation[-1]["content"].rsplit("[Response]\n", 1)[1]
        return text_of(response)  # type: ignore[operator, no-any-return]

    return MockBackend(respond, model_id="mock-explainer")


def test_both_judge_kinds_implement_the_one_interface(tiny_mlm: Path) -> None:
    slot = plain_judge(tiny_mlm)
    cerm_judge = Judge(MockBackend(scripted()))
    for judge in (slot, cerm_judge):
        assert isinstance(judge, RewardJudge)
        assert judge.model_id
        assert judge.backend_name
        described = judge.describe()
        assert {"backend", "config"} <= set(described)
    assert slot.kind == "esfp-slot"
    assert cerm_judge.kind == "ce-rm"
    assert slot.backend_name == "hf-masked-lm"


def test_scores_are_the_readout_of_the_slot_distribution(tiny_mlm: Path) -> None:
    judge = plain_judge(tiny_mlm)
    judgments = judge.judge(QUERY, RESPONSES)
    assert [j.status for j in judgments] == [Status.SCORED] * 3
    for j in judgments:
        assert j.slot is not None
        assert j.slot.log_p_positive is not None
        assert j.slot.log_p_negative is not None
        assert j.slot.log_p_positive < 0
        assert j.slot.log_p_negative < 0
        assert j.score == pytest.approx(slot_reward(j.slot.log_p_positive, j.slot.log_p_negative, "probability"))
        assert j.score is not None
        assert 0 < j.score < 10
        assert j.provenance.backend == "hf-masked-lm"
        assert j.provenance.prompt_version.startswith("esfp-slot/")
        assert j.chains == ()
    # Different responses read differently (the model reads the text, not a constant).
    assert len({j.score for j in judgments}) == 3
    log_odds = SlotJudge(judge.reader, readout="log_odds")
    margins = log_odds.score(QUERY, RESPONSES)
    assert margins == pytest.approx([j.slot.margin for j in judgments if j.slot is not None])
    assert log_odds.score_range is None
    assert judge.score_range == (0.0, 10.0)


def test_compare_rank_best_of_n_and_batches_follow_the_scores(tiny_mlm: Path) -> None:
    judge = plain_judge(tiny_mlm)
    scores = judge.score(QUERY, RESPONSES)
    assert all(s is not None for s in scores)
    order = sorted(range(3), key=lambda i: -(scores[i] or 0.0))
    assert [r.index for r in judge.rank(QUERY, RESPONSES)] == order
    best = judge.best_of_n(QUERY, RESPONSES)
    assert best.best_index == order[0]
    assert best.best == RESPONSES[order[0]]
    comparison = judge.compare(QUERY, RESPONSES[0], RESPONSES[1])
    assert comparison.winner == ("a" if (scores[0] or 0) > (scores[1] or 0) else "b")
    # Many queries at once give each query's own scores, in input order; async gives the same.
    other = ("Which is larger, 3 or 8?", ["8", "3"])
    batch = judge.score_batch([(QUERY, RESPONSES), other])
    assert batch[0] == pytest.approx(scores)
    assert batch[1] == pytest.approx(judge.score(*other))
    async_batch = asyncio.run(judge.ascore_batch([(QUERY, RESPONSES), other]))
    assert [row == pytest.approx(expected) for row, expected in zip(async_batch, batch, strict=True)] == [True, True]
    assert asyncio.run(judge.abest_of_n(QUERY, RESPONSES)).best_index == order[0]


def test_unreadable_responses_and_invalid_items_are_never_numbers(tiny_mlm: Path) -> None:
    judge = plain_judge(tiny_mlm)
    row = judge.judge(QUERY, ["42", "   ", "\u200b"])
    assert [j.status for j in row] == [Status.SCORED, Status.UNSCORABLE, Status.UNSCORABLE]
    assert row[1].score is None
    assert row[1].reason is not None
    assert "empty" in row[1].reason
    rows = judge.judge_batch([(QUERY, ["42"]), ("", ["x"]), ("Q", "not a list")], on_invalid="error")  # type: ignore[list-item]
    assert rows[0][0].status is Status.SCORED
    assert rows[1][0].status is Status.ERROR
    assert rows[1][0].reason is not None
    assert rows[1][0].reason.startswith("invalid input:")
    assert rows[2][0].status is Status.ERROR
    with pytest.raises(ValueError, match="empty"):
        judge.judge_batch([("", ["x"])])
    from cerm import TieBreak

    with pytest.raises(ConfigurationError, match="cannot break ties"):
        judge.best_of_n(QUERY, RESPONSES, tie_break=TieBreak())


def test_stage_one_explanations_reach_the_slot_and_failures_are_error_or_unscorable(tiny_mlm: Path) -> None:
    def text_of(response: str) -> str | Completion:
        if "boom" in response:
            return Completion.failed("HTTP 503 from the explanation server")
        if "silent" in response:
            return "   "
        if "long" in response:
            return Completion("It rambles on", "length", 5, 4)
        return f"The response {'is correct' if '42' in response else 'has an arithmetic mistake'}."

    backend = explaining(text_of)
    reader = MaskedSlotReader(str(tiny_mlm))  # the default template, with {explanation}
    judge = SlotJudge(reader, BackendExplainer(backend, params=SamplingParams(max_new_tokens=16)))
    row = judge.judge(QUERY, ["42", "boom 41", "silent 40", "long 39"])
    ok, failed, empty, cut = row
    assert ok.status is Status.SCORED
    assert ok.slot is not None
    assert ok.slot.explanation == "The response is correct."
    assert ok.slot.explanation_source == "backend"
    assert failed.status is Status.ERROR
    assert failed.score is None
    assert "HTTP 503" in (failed.reason or "")
    assert empty.status is Status.UNSCORABLE
    assert empty.score is None
    assert "explanation is empty" in (empty.reason or "")
    assert cut.status is Status.SCORED
    assert any("max_new_tokens=16" in w for w in cut.warnings)
    # The explanation changes what the slot model reads: the same response with another explanation reads otherwise.
    alone = MaskedSlotReader(str(tiny_mlm)).read([SlotInput(QUERY, "42", "The response is correct.")])[0]
    other = MaskedSlotReader(str(tiny_mlm)).read([SlotInput(QUERY, "42", "A wrong and bad answer.")])[0]
    assert ok.slot.log_p_positive == pytest.approx(alone.log_p_positive)  # type: ignore[union-attr]
    assert alone.log_p_positive != pytest.approx(other.log_p_positive)  # type: ignore[union-attr]
    # One backend call for all explanations of a batch.
    assert asyncio.run(judge.ajudge(QUERY, ["42"]))[0].score == pytest.approx(ok.score)


def test_ce_rm_evaluation_as_the_explanation(tiny_mlm: Path) -> None:
    def score_of(query: str, response: str, sample: int) -> str | Completion:
        if "boom" in response:
            return Completion.failed("out of memory")
        return "8" if "42" in response else "3"

    cerm_judge = Judge(MockBackend(scripted(score_of)))
    judge = SlotJudge(MaskedSlotReader(str(tiny_mlm)), CermExplainer(cerm_judge))
    good, bad, failed = judge.judge(QUERY, ["42", "41", "boom"])
    assert good.status is Status.SCORED
    assert good.slot is not None
    assert good.slot.explanation_source == "ce-rm"
    assert good.slot.explanation == realistic_evaluation("8").strip()
    assert good.slot.ce_rm_score == 8.0
    assert bad.slot is not None
    assert bad.slot.ce_rm_score == 3.0
    # The slot model read exactly the CE-RM evaluation text as the explanation.
    direct = judge.reader.read([SlotInput(QUERY, "42", good.slot.explanation)])[0]
    assert good.slot.log_p_positive == pytest.approx(direct.log_p_positive, abs=1e-6)  # type: ignore[union-attr]
    assert failed.status is Status.ERROR
    assert failed.score is None
    # The explainer's criteria cache is the slot judge's per-query cache (the reward server and veRL use it).
    cached = judge.with_query_cache(16)
    assert cached.cache is not None
    assert judge.cache is None


def test_explainer_and_template_must_agree(tiny_mlm: Path) -> None:
    with pytest.raises(ConfigurationError, match="no explainer"):
        SlotJudge(MaskedSlotReader(str(tiny_mlm)))
    reader = MaskedSlotReader(str(tiny_mlm), template=SlotTemplate(PLAIN_SLOT_TEMPLATE))
    with pytest.raises(ConfigurationError, match="no \\{explanation\\}"):
        SlotJudge(reader, BackendExplainer(explaining(lambda r: "x")))
    with pytest.raises(ValueError, match="exactly one"):
        SlotTemplate("{query} {response}")
    with pytest.raises(ValueError, match="unknown placeholder"):
        SlotTemplate("{query} {response} {mask} {score}")
    with pytest.raises(ConfigurationError, match="does not know"):
        MaskedSlotReader(str(tiny_mlm), verbalizer=Verbalizer(("good",), ("zzzzqqq",)))
    with pytest.raises(ValueError, match="both classes"):
        Verbalizer(("good",), ("good",))


def test_multi_piece_verbalizer_words_widen_the_slot(tiny_mlm: Path) -> None:
    import torch

    template = SlotTemplate(PLAIN_SLOT_TEMPLATE)
    reader = MaskedSlotReader(str(tiny_mlm), template=template, verbalizer=Verbalizer(("good", "rightly"), ("bad",)))
    pieces = reader.pieces[1]
    assert len(pieces) == 3  # right ##l ##y in the tiny vocabulary
    item = SlotInput(QUERY, "42")
    read = reader.read([item])[0]
    words = dict(read.word_log_probs)  # type: ignore[union-attr]
    # By hand: the slot widened to three mask tokens, the sum of each piece's log-probability at its position.
    tok = reader.tokenizer
    encoded = encode(tok, template, item, mask_tokens=[tok.mask_token_id] * 3, max_length=reader.max_length)
    with torch.no_grad():
        logits = reader.model(input_ids=torch.tensor([encoded.ids])).logits[0]
    by_hand = sum(
        float(torch.log_softmax(logits[p], -1)[t]) for p, t in zip(encoded.mask_positions, pieces, strict=True)
    )
    assert words["rightly"] == pytest.approx(by_hand, abs=1e-5)
    # A class of several words is the log-sum-exp of its words.
    assert read.log_p_positive == pytest.approx(  # type: ignore[union-attr]
        math.log(math.exp(words["good"]) + math.exp(words["rightly"])), abs=1e-5
    )
    assert read.log_p_negative == pytest.approx(words["bad"], abs=1e-5)  # type: ignore[union-attr]


def test_truncation_keeps_the_slot_and_the_query_and_cuts_response_and_explanation(tiny_mlm: Path) -> None:
    reader = MaskedSlotReader(str(tiny_mlm), max_length=64)
    tok = reader.tokenizer
    long_response = "the answer is forty two " * 40
    long_explanation = "this is right " * 40
    item = SlotInput(QUERY, long_response, long_explanation)
    encoded = encode(tok, reader.template, item, mask_tokens=[tok.mask_token_id], max_length=64)
    assert len(encoded.ids) == 64
    assert encoded.ids.count(tok.mask_token_id) == 1
    text = tok.decode(encoded.ids)
    assert "what is 17 + 25?" in text  # the query is whole
    assert any(w.startswith("response truncated") for w in encoded.warnings)
    assert any(w.startswith("explanation truncated") for w in encoded.warnings)
    judge = SlotJudge(reader, BackendExplainer(explaining(lambda r: long_explanation if "forty" in r else "Right.")))
    (judgment,) = judge.judge(QUERY, [long_response])
    assert judgment.status is Status.SCORED
    assert judgment.slot is not None
    assert judgment.slot.truncated
    assert any("truncated" in w for w in judgment.warnings)
    # A short input is not cut and carries no warning.
    (short,) = judge.judge(QUERY, ["42"])
    assert short.slot is not None
    assert not short.slot.truncated
    # A template that cannot fit at all is unscorable, not a number.
    tiny = MaskedSlotReader(str(tiny_mlm), template=SlotTemplate(PLAIN_SLOT_TEMPLATE), max_length=8)
    (unfit,) = SlotJudge(tiny).judge(QUERY, ["42"])
    assert unfit.status is Status.UNSCORABLE
    assert "template alone" in (unfit.reason or "")


def test_causal_cloze_readout_on_the_demo_model(demo_backend: Backend) -> None:
    import torch

    model, tok = demo_backend.model, demo_backend.tokenizer  # type: ignore[attr-defined]
    template = SlotTemplate(PLAIN_SLOT_TEMPLATE)
    reader = CausalSlotReader(model, tokenizer=tok, template=template)
    assert all(len(p) == 1 for p in reader.pieces)  # " good" and " bad" are one token each in SmolLM2
    judge = SlotJudge(reader)
    (j,) = judge.judge(QUERY, ["42"])
    assert j.status is Status.SCORED
    assert j.provenance.backend == "hf-causal-lm"
    # By hand: the next-token distribution after the cloze prefix (the text up to the slot, its space left to the word).
    # The segments are tokenized one by one (see cerm._slot._encode), a field's leading space kept with the field.
    parts = ["Question:", " What is 17 + 25?", "\nResponse:", " 42", "\nOverall, the response is"]
    lead, _ = special_tokens(tok)  # what the tokenizer puts first (a BOS, if any)
    ids = lead + [t for part in parts for t in tok(part, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
    assert j.slot is not None
    assert j.slot.log_p_positive == pytest.approx(float(log_probs[reader.pieces[0][0]]), abs=1e-4)
    assert j.slot.log_p_negative == pytest.approx(float(log_probs[reader.pieces[1][0]]), abs=1e-4)


def test_backend_explanations_from_the_demo_model(tiny_mlm: Path, demo_backend: Backend) -> None:
    """Stage 1 on a real generative model (the embedded demo), stage 2 on the tiny masked LM."""
    explainer = BackendExplainer(demo_backend, params=SamplingParams(max_new_tokens=6))
    judge = SlotJudge(MaskedSlotReader(str(tiny_mlm)), explainer)
    row = judge.judge(QUERY, ["42", "41"])
    for j in row:
        assert j.status is Status.SCORED
        assert j.slot is not None
        assert j.slot.explanation
        assert j.provenance.evaluation_usage.completion_tokens > 0


def test_slot_judge_from_config(tiny_mlm: Path, tmp_path: Path) -> None:
    path = tmp_path / "slot.yaml"
    path.write_text(f"slot_model: {tiny_mlm}\nexplanation: none\nreadout: log_odds\npositive: [good, right]\n")
    config = SlotJudgeConfig.from_yaml(path)
    assert config.positive == ("good", "right")
    judge = slot_judge_from_config(config)
    assert judge.explainer is None
    assert judge.reader.template.text == PLAIN_SLOT_TEMPLATE
    assert judge.score_range is None
    (j,) = judge.judge(QUERY, ["42"])
    assert j.status is Status.SCORED
    with pytest.raises(ValueError, match="unknown slot judge setting"):
        SlotJudgeConfig.from_dict({"slot_model": "x", "mask": "y"})
    cerm_config = SlotJudgeConfig(slot_model=str(tiny_mlm), explanation="ce-rm")
    with slot_judge_from_config(
        cerm_config,
        model=MockBackend(scripted()),
        judge_config=JudgeConfig(),  # type: ignore[arg-type]
    ) as built:
        assert isinstance(built, SlotJudge)
        assert isinstance(built.explainer, CermExplainer)
