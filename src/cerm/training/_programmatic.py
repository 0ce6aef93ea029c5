"""The programmatic teacher: correct CE-RM criteria and evaluation turns for generated pairs whose verdict is known.

It reads the ground truth that :func:`checkable_pairs` and :func:`open_ended_pairs` put in ``pair.meta`` and writes,
in the exact CE-RM output format (SPEC section 1), one criteria turn per pair (an analysis, then a numbered
``term: description`` list between ``[Start of Criteria]`` and ``[End of Criteria]``) and one evaluation turn per
response (each criterion analysed and scored 0-5 in ``$\\boxed{}$``, then an overall analysis and the overall 0-10
score in ``$\\boxed{}$``). Its content is correct: it states the right answer and says why the wrong one is wrong
(or names the open answer's defect). Its scores always put the chosen response strictly above the rejected one.

The turns are short on purpose (criteria about 60-120 tokens, evaluations about 80-160), because the demo student is
a 135M-parameter model fine-tuned on CPU, and their wording is drawn from several templates with a generator seeded by
the teacher's seed and the pair id, so the same pair always gets the same text and different pairs get varied text.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from cerm.training._pairs import PreferencePair
from cerm.training._teach import TeacherDraft

PROGRAMMATIC_TEACHER = "programmatic"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _box(value: float) -> str:
    return f"$\\boxed{{{value:g}}}$"


def _criteria_turn(rng: random.Random, analysis: str, items: Sequence[tuple[str, str]]) -> str:
    lines = "\n".join(f"{i}. {term}: {description}" for i, (term, description) in enumerate(items, start=1))
    return f"{analysis}\n\n[Start of Criteria]\n{lines}\n[End of Criteria]"


def _evaluation_turn(
    rng: random.Random, parts: Sequence[tuple[str, str, float]], overall_text: str, overall: float
) -> str:
    """An evaluation turn in one of three layouts: ``parts`` is (criterion term, analysis, 0-5 score) in order."""
    layout = rng.randrange(3)
    blocks: list[str] = []
    for i, (term, analysis, score) in enumerate(parts, start=1):
        if layout == 0:
            blocks.append(f"{i}. {term}: {analysis} Score: {_box(score)}")
        elif layout == 1:
            blocks.append(f"**{term}**\n{analysis}\n{_box(score)}")
        else:
            blocks.append(f"{term} - {analysis} {_box(score)}")
    if layout == 0:
        blocks.append(f"Overall: {overall_text} Overall score: {_box(overall)}")
    elif layout == 1:
        blocks.append(f"**Overall Evaluation**\n{overall_text}\n{_box(overall)}")
    else:
        blocks.append(f"Overall assessment - {overall_text} Final score: {_box(overall)}")
    return "\n\n".join(blocks)


def _style(response: str, answer: str) -> str:
    """How a checkable response is phrased: the bare value, one sentence, or a worked line."""
    if response.strip() == answer:
        return "terse"
    return "worked" if len(response.split()) > 9 else "sentence"


_CLARITY_GOOD = {
    "terse": ("The value is given directly, with nothing to confuse the reader.", 4.5),
    "sentence": ("The answer is stated in one clear, complete sentence.", 5.0),
    "worked": ("It shows a short line of reasoning and ends with a clear answer.", 5.0),
}
_CLARITY_BAD = {
    "terse": "It is direct, but it directly states a wrong value.",
    "sentence": "The sentence is clear, but clarity cannot make a wrong value useful.",
    "worked": "The reasoning reads smoothly, which makes the wrong result more misleading.",
}


def _checkable_draft(rng: random.Random, pair: PreferencePair, meta: Mapping[str, Any]) -> TeacherDraft:
    subject, answer, wrong = str(meta["subject"]), str(meta["answer"]), str(meta["wrong"])
    fact, error = str(meta["fact"]), str(meta["error"])
    analysis = rng.choice(
        (
            f"The user asks for {subject}. There is one right answer: {fact}. A good response must give that value; "
            "how it is phrased matters much less than whether it is right.",
            f"This question has a checkable answer. Working it out: {fact}. So the response should state {answer} "
            "clearly, and any other value is simply wrong.",
            f"To judge the responses I first work out the answer myself: {fact}. Correctness is therefore the main "
            "criterion, followed by a clear, direct statement of the result.",
        )
    )
    correct_term = rng.choice(("Correctness", "Accuracy", "Correct answer"))
    clarity_term = rng.choice(("Clarity", "Directness", "Clear answer"))
    items = [
        (
            correct_term,
            rng.choice(
                (f"The response gives {answer} as {subject}.", f"The final answer is {answer}; any other value fails.")
            ),
        ),
        (clarity_term, "The answer is stated plainly, without confusing or contradictory content."),
    ]
    concise = rng.random() < 0.4
    if concise:
        items.append(("Concision", "Nothing irrelevant or padded surrounds the answer."))
    criteria = _criteria_turn(rng, analysis, items)

    good_style, bad_style = _style(pair.chosen, answer), _style(pair.rejected, wrong)
    clarity_text, clarity_score = _CLARITY_GOOD[good_style]
    good_parts: list[tuple[str, str, float]] = [
        (
            correct_term,
            rng.choice(
                (
                    f"The response gives {answer}, which is right: {_cap(fact)}.",
                    f"It answers {answer}, the correct result.",
                )
            ),
            5.0,
        ),
        (clarity_term, clarity_text, clarity_score),
    ]  # fmt: skip
    bad_parts: list[tuple[str, str, float]] = [
        (
            correct_term,
            rng.choice(
                (
                    f"The response gives {wrong}, which {error}.",
                    f"It answers {wrong}, but {fact}; {wrong} {error}.",
                )
            ),
            rng.choice((0.0, 0.0, 0.5, 1.0)),
        ),
        (clarity_term, _CLARITY_BAD[bad_style], rng.choice((2.0, 3.0, 3.5, 4.0))),
    ]  # fmt: skip
    if concise:
        good_parts.append(("Concision", "It is short and to the point.", rng.choice((4.5, 5.0))))
        bad_parts.append(("Concision", "It is short, but being brief does not help a wrong answer.", 3.0))
    good_overall = rng.choice((8.0, 8.5, 9.0, 9.0, 9.5, 10.0))
    bad_overall = rng.choice((1.0, 1.5, 2.0, 2.0, 2.5, 3.0))
    good_text = rng.choice(
        (
            f"The response is correct ({answer}) and clearly stated, so it fully answers the question.",
            "A correct and clear answer; nothing important is missing.",
            f"It gets the one thing that matters right, {answer}, and says it clearly.",
        )
    )
    bad_text = rng.choice(
        (
            f"The response is wrong: it says {wrong} instead of {answer}. However it is written, a wrong answer to a "
            "question with one right answer has little value.",
            f"The key fact is wrong ({wrong} rather than {answer}), which outweighs any strength of its style.",
            f"It gives {wrong}, but the right answer is {answer}, so the response fails its main purpose.",
        )
    )
    return TeacherDraft(
        criteria=criteria,
        chosen_evaluation=_evaluation_turn(rng, good_parts, good_text, good_overall),
        rejected_evaluation=_evaluation_turn(rng, bad_parts, bad_text, bad_overall),
    )


# Per defect: (relevance, constraint, substance, clarity) analyses and scores, and the overall range.
def _defect_parts(
    meta: Mapping[str, Any], topic: str, rng: random.Random
) -> tuple[list[tuple[str, float]], list[float], str]:
    """``topic`` is what the request is about, as a noun phrase ("gravity", "how to sleep better")."""
    note, constraint = str(meta["note"]), str(meta["constraint"])
    defect = str(meta["defect"])
    if defect == "off_topic":
        parts = [
            (f"The response {note}.", 0.0),
            ("It has the requested form, but for the wrong subject.", 2.0),
            (f"None of its content is about {topic}.", 0.0),
            ("It is clearly written.", 3.0),
        ]
        return parts, [1.0, 1.5, 2.0], f"The response {note}, so it does not answer the user at all."
    if defect == "refusal":
        parts = [
            ("It does not address the request at all.", 0.0),
            ("No answer is given, so the requested form is not met.", 0.0),
            ("There is no content.", 0.0),
            ("The refusal is clear, but it gives no reason for declining a harmless request.", 1.0),
        ]
        return parts, [0.0, 0.5, 1.0], f"The response {note}; the user gets nothing useful."
    if defect == "truncated":
        parts = [
            (f"It starts on {topic}.", 3.0),
            ("The answer is cut off, so the requested form is not met.", 1.0),
            ("Only part of the content is there.", 2.0),
            ("It stops in the middle of a sentence and never finishes.", 1.0),
        ]
        return (
            parts,
            [2.5, 3.0, 3.5],
            "The response begins well but is unfinished, which leaves the user without a full answer.",
        )
    if defect == "repeats_question":
        parts = [
            ("It restates the request instead of answering it.", 1.0),
            ("Nothing is answered, so the requested form is not met.", 0.0),
            ("It gives no information.", 0.0),
            ("Repeating the question adds nothing.", 1.0),
        ]
        return parts, [0.0, 0.5, 1.0], f"The response {note}."
    if defect == "vague":
        parts = [
            ("It mentions the subject only in general terms.", 2.0),
            ("The form is loosely acceptable, but there is nothing in it.", 2.0),
            (f"It gives no specific information about {topic}.", 0.0),
            ("The sentences are readable but empty.", 3.0),
        ]
        return parts, [1.5, 2.0, 2.5], f"The response {note}, so the user learns nothing."
    if defect == "ignores_constraint":
        parts = [
            (f"The content is about {topic}.", 5.0),
            (f"The user asked for {constraint}, but the response {note}.", rng.choice((0.0, 1.0))),
            ("The information itself is accurate.", 3.0 if "only" in note else 4.0),
            ("It is clear and easy to read.", 4.0),
        ]
        return (
            parts,
            [4.0, 4.5, 5.0],
            (f"The content is fine, but the response {note}; ignoring an explicit instruction is a serious flaw."),
        )
    if defect == "wrong_language":
        parts = [
            (f"The content is about {topic}.", 3.0),
            ("It keeps to the requested length.", 3.0),
            ("What it says is accurate.", 3.0),
            ("It is written in French although the user wrote in English, so the user may not understand it.", 0.0),
        ]
        return parts, [2.0, 2.5, 3.0], f"The response {note}, which makes an otherwise reasonable answer hard to use."
    raise ValueError(f"unknown defect {defect!r}")


def _open_draft(rng: random.Random, pair: PreferencePair, meta: Mapping[str, Any]) -> TeacherDraft:
    topic, constraint, met = str(meta["topic"]), str(meta["constraint"]), str(meta["met"])
    advice = pair.category == "advice"
    subject = f"how to {topic}" if advice else topic
    request = str(meta.get("request", pair.prompt))  # the ask itself, without framing or earlier turns
    if constraint:
        analysis = rng.choice(
            (
                f'The user asks: "{request}" A good response must be about {subject}, respect the request for '
                f"{constraint}, and say something accurate and specific.",
                f"The request is about {subject} and states a constraint: {constraint}. Relevance and that "
                "constraint come first, then the quality of the content and its clarity.",
            )
        )
    else:
        analysis = rng.choice(
            (
                f"The user wants {'practical advice on ' if advice else 'information about '}{subject}. A good "
                "response stays on that subject, gives accurate and specific content, and is clear and complete.",
                f"This is an open request about {subject}. What matters is that the answer is on topic, useful and "
                "specific, and written clearly.",
            )
        )
    terms = [rng.choice(("Relevance", "Topicality"))]
    descriptions = [f"The response addresses {subject} directly."]
    if constraint:
        terms.append(rng.choice(("Instruction following", "Constraint")))
        descriptions.append(f"The response respects the requested form: {constraint}.")
    terms.append(rng.choice(("Substance", "Usefulness") if advice else ("Substance", "Accuracy")))
    descriptions.append(
        "The tips are concrete and practical." if advice else "The content is accurate and specific, not vague."
    )
    terms.append(rng.choice(("Clarity", "Completeness and clarity")))
    descriptions.append("The response is complete, clear and written in English.")
    criteria = _criteria_turn(rng, analysis, list(zip(terms, descriptions, strict=False)))

    good = [
        (f"The response is about {subject}, as asked.", 5.0),
        (f"It respects the request: {met}.", 5.0),
        (
            rng.choice(("The tips are concrete and easy to act on.", "Each tip is specific and practical."))
            if advice
            else rng.choice(("The content is accurate and specific.", "It states correct, specific facts.")),
            rng.choice((4.0, 4.5, 5.0)),
        ),
        ("It is clear, complete and in English.", rng.choice((4.5, 5.0))),
    ]
    bad, bad_range, bad_text = _defect_parts(meta, subject, rng)
    if not constraint:  # drop the constraint criterion's entry
        good.pop(1)
        bad.pop(1)
    good_overall = rng.choice((8.0, 8.5, 9.0, 9.5))
    good_text = rng.choice(
        (
            f"The response answers the request well: it is on topic, {met + ', ' if met else ''}accurate and clear.",
            "A relevant, accurate and clear answer that does what the user asked.",
        )
    )
    return TeacherDraft(
        criteria=criteria,
        chosen_evaluation=_evaluation_turn(
            rng, [(t, a, s) for t, (a, s) in zip(terms, good, strict=False)], good_text, good_overall
        ),
        rejected_evaluation=_evaluation_turn(
            rng, [(t, a, s) for t, (a, s) in zip(terms, bad, strict=False)], bad_text, rng.choice(bad_range)
        ),
    )


class ProgrammaticTeacher:
    """A :class:`Teacher` that writes correct turns for the pairs of :func:`checkable_pairs` and
    :func:`open_ended_pairs` (it reads their ``meta``); it gives no draft for any other pair.

    Deterministic: the wording depends only on ``seed``, the pair id and the attempt number.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @property
    def name(self) -> str:
        return PROGRAMMATIC_TEACHER

    def supports(self, pair: PreferencePair) -> bool:
        """Whether the pair carries the ground truth this teacher needs."""
        return pair.meta.get("family") in ("checkable", "open")

    def draft(self, pair: PreferencePair, attempt: int = 0) -> TeacherDraft | None:
        """One criteria turn and both evaluations for ``pair``, or None when the pair is not one of ours."""
        if not self.supports(pair):
            return None
        rng = random.Random(f"cerm-programmatic:{self.seed}:{pair.id}:{attempt}")
        if pair.meta["family"] == "checkable":
            return _checkable_draft(rng, pair, pair.meta)
        return _open_draft(rng, pair, pair.meta)

    def drafts(self, pairs: Sequence[PreferencePair], attempt: int) -> list[list[TeacherDraft]]:
        out: list[list[TeacherDraft]] = []
        for pair in pairs:
            draft = self.draft(pair, attempt)
            out.append([] if draft is None else [draft])
        return out
