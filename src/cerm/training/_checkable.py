"""Checkable preference pairs: queries whose right answer cerm computes, so a programmatic teacher can judge them.

Six task families: arithmetic (+, -, x; small and multi-digit operands), comparisons (which number is larger or
smaller, integers and decimals), unit conversions (km/m, kg/g, hours/minutes), counting (letters in a word, one letter's
occurrences, items in a list), string operations (reverse, uppercase, first/last character), and facts from small
tables written here (capitals of 33 countries, the planets' order).

Each pair's ``chosen`` is a correct, natural answer and its ``rejected`` a plausibly wrong one (off by one, swapped
digits, a carrying slip, the wrong conversion factor or unit, the other number, a big city that is not the capital, a
neighbouring planet). Half the time both answers use the same phrasing; otherwise their styles differ (terse, a
sentence, a worked explanation) in either direction, so length and style say nothing about which one is right and a
judge trained on them must read the content.

**Held-out split.** Every task instance has a canonical key that ignores its wording (``"mul:17:23"``,
``"capital:France"``, ``"reverse:planet"``); an instance belongs to the held-out split when the SHA-256 of its key falls
in the lowest fifth of the hash range, else to train. The split is therefore fixed (it depends on neither the seed nor
``n``), disjoint by construction (a key is in exactly one split, so no rewording of a held-out question ever reaches
train), and covers every family in about a fifth of its instances. Use ``split="heldout"`` with any seed for
evaluation; training data comes from ``split="train"``.

``meta`` carries the ground truth the programmatic teacher needs: ``family``, ``task``, ``key``, ``subject`` (what is
asked, as a noun phrase), ``answer`` and ``wrong`` (the two values), ``fact`` (a sentence stating the right result) and
``error`` (why the wrong value is wrong, as the body of a relative clause: "... which {error}").
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cerm._errors import ConfigurationError
from cerm.training._pairs import PreferencePair

Split = Literal["train", "heldout"]

#: Share of every family's instances (by key hash) that belongs to the held-out split.
HELDOUT_SHARE = 0.2

CHECKABLE_SOURCE = "cerm-checkable"

CAPITALS: tuple[tuple[str, str, str], ...] = (
    # (country, capital, a large city of the same country that is not its capital)
    ("France", "Paris", "Lyon"),
    ("Germany", "Berlin", "Munich"),
    ("Italy", "Rome", "Milan"),
    ("Spain", "Madrid", "Barcelona"),
    ("Japan", "Tokyo", "Osaka"),
    ("Canada", "Ottawa", "Toronto"),
    ("Australia", "Canberra", "Sydney"),
    ("Brazil", "Brasilia", "Rio de Janeiro"),
    ("Turkey", "Ankara", "Istanbul"),
    ("Switzerland", "Bern", "Zurich"),
    ("the United States", "Washington, D.C.", "New York City"),
    ("India", "New Delhi", "Mumbai"),
    ("China", "Beijing", "Shanghai"),
    ("Russia", "Moscow", "Saint Petersburg"),
    ("Egypt", "Cairo", "Alexandria"),
    ("Nigeria", "Abuja", "Lagos"),
    ("Kenya", "Nairobi", "Mombasa"),
    ("Mexico", "Mexico City", "Guadalajara"),
    ("Argentina", "Buenos Aires", "Cordoba"),
    ("Portugal", "Lisbon", "Porto"),
    ("Poland", "Warsaw", "Krakow"),
    ("Greece", "Athens", "Thessaloniki"),
    ("Sweden", "Stockholm", "Gothenburg"),
    ("Norway", "Oslo", "Bergen"),
    ("Vietnam", "Hanoi", "Ho Chi Minh City"),
    ("South Korea", "Seoul", "Busan"),
    ("Morocco", "Rabat", "Casablanca"),
    ("Pakistan", "Islamabad", "Karachi"),
    ("New Zealand", "Wellington", "Auckland"),
    ("Ireland", "Dublin", "Cork"),
    ("Austria", "Vienna", "Salzburg"),
    ("Peru", "Lima", "Cusco"),
    ("Thailand", "Bangkok", "Chiang Mai"),
)

PLANETS = ("Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune")
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")

_WORDS = (
    "apple", "banana", "garden", "planet", "rocket", "window", "elephant", "mountain", "river", "pencil", "orange",
    "library", "bottle", "candle", "dragon", "forest", "guitar", "island", "jacket", "kitchen", "lemon", "marble",
    "needle", "ocean", "pepper", "rabbit", "silver", "tomato", "umbrella", "violin", "winter", "yellow", "zebra",
    "butter", "coffee", "letter", "balloon", "mirror", "summer", "pillow", "cherry", "strawberry", "banana",
    "committee", "address", "success", "puzzle", "bubble", "tunnel", "parrot", "carrot", "hammer", "basket",
    "castle", "picture", "harbor", "meadow", "thunder", "blanket",
)  # fmt: skip

_ITEMS = (
    "apple", "pear", "plum", "fig", "grape", "melon", "kiwi", "lime", "peach", "mango", "cherry", "lemon", "date",
    "chair", "table", "lamp", "desk", "sofa", "shelf", "rug", "bed", "stool", "mirror",
    "red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "grey",
)  # fmt: skip

_PHRASES = (
    "garden path", "blue sky", "quick fox", "happy birthday", "open door", "good morning", "silver moon",
    "rainy day", "green tea", "little house", "cold water", "paper plane", "late night", "old bridge",
    "bright star", "summer rain", "hello world", "fresh bread", "small boat", "wild flower",
)  # fmt: skip


@dataclass(frozen=True)
class _Instance:
    """One generated task: the question, both values, the teacher's ground truth, and the three phrasings of an
    answer (terse, sentence, worked) with ``{v}`` where the value goes."""

    task: str
    category: str
    key: str
    query: str
    subject: str
    answer: str
    wrong: str
    fact: str
    error: str
    styles: tuple[str, str, str]


def _num(value: float) -> str:
    """A number as people write it: integers without a decimal point, decimals without trailing zeros."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _qty(value: float, unit: str) -> str:
    """A quantity with its unit, singular for exactly 1 ("1 kilogram", "2.5 kilograms")."""
    return f"{_num(value)} {unit[:-1] if value == 1 and unit.endswith('s') else unit}"


def _swap_digits(value: int) -> int | None:
    """The value with two adjacent different digits swapped (a transposition slip), or None when impossible."""
    digits = list(str(value))
    spots = [i for i in range(len(digits) - 1) if digits[i] != digits[i + 1] and not (i == 0 and digits[1] == "0")]
    if not spots:
        return None
    i = spots[len(spots) // 2]
    digits[i], digits[i + 1] = digits[i + 1], digits[i]
    return int("".join(digits))


def _wrong_result(rng: random.Random, value: int) -> tuple[int, str]:
    """A plausibly wrong integer result and why it is wrong."""
    options: list[tuple[int, str]] = [
        (value + 1, f"is off by one (the result is {value})"),
        (value - 1, f"is off by one (the result is {value})"),
    ]
    if abs(value) >= 20:
        options.append((value + 10, f"is off by ten, a carrying slip (the result is {value})"))
        options.append((value - 10, f"is off by ten, a carrying slip (the result is {value})"))
    swapped = _swap_digits(abs(value))
    if swapped is not None and swapped != abs(value):
        options.append(((swapped if value >= 0 else -swapped), f"swaps two digits of the right result, {value}"))
        options.append(((swapped if value >= 0 else -swapped), f"swaps two digits of the right result, {value}"))
    return rng.choice(options)


def _operands(rng: random.Random) -> tuple[int, int]:
    if rng.random() < 0.4:
        return rng.randint(2, 20), rng.randint(2, 20)
    return rng.randint(10, 999), rng.randint(10, 999)


def _addition(rng: random.Random) -> _Instance:
    a, b = _operands(rng)
    value = a + b
    wrong, error = _wrong_result(rng, value)
    query = rng.choice(
        (f"What is {a} + {b}?", f"Calculate {a} plus {b}.", f"What do you get when you add {a} and {b}?")
    )
    return _Instance(
        "addition", "arithmetic", f"add:{a}:{b}", query, f"the sum of {a} and {b}", str(value), str(wrong),
        f"{a} + {b} = {value}", error,
        ("{v}", f"{a} + {b} = {{v}}.", f"Adding {a} and {b} gives {{v}}, so the answer is {{v}}."),
    )  # fmt: skip


def _subtraction(rng: random.Random) -> _Instance:
    a, b = sorted(_operands(rng), reverse=True)
    if a == b:
        a += rng.randint(1, 9)
    value = a - b
    wrong, error = _wrong_result(rng, value)
    query = rng.choice((f"What is {a} - {b}?", f"Calculate {a} minus {b}.", f"Subtract {b} from {a}."))
    return _Instance(
        "subtraction", "arithmetic", f"sub:{a}:{b}", query, f"{a} minus {b}", str(value), str(wrong),
        f"{a} - {b} = {value}", error,
        ("{v}", f"{a} - {b} = {{v}}.", f"Taking {b} away from {a} leaves {{v}}, so the answer is {{v}}."),
    )  # fmt: skip


def _multiplication(rng: random.Random) -> _Instance:
    if rng.random() < 0.5:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
    else:
        a, b = rng.randint(11, 99), rng.randint(3, 99)
    value = a * b
    if rng.random() < 0.35:
        wrong, error = a * (b + 1), f"is {a} x {b + 1}, not {a} x {b} (the product is {value})"
    else:
        wrong, error = _wrong_result(rng, value)
    query = rng.choice((f"What is {a} x {b}?", f"What is {a} * {b}?", f"Multiply {a} by {b}."))
    return _Instance(
        "multiplication", "arithmetic", f"mul:{a}:{b}", query, f"the product of {a} and {b}", str(value),
        str(wrong), f"{a} x {b} = {value}", error,
        ("{v}", f"{a} x {b} = {{v}}.", f"Multiplying {a} by {b} gives {{v}}, so the answer is {{v}}."),
    )  # fmt: skip


def _comparison(rng: random.Random) -> _Instance:
    larger = rng.random() < 0.6
    word = "larger" if larger else "smaller"
    if rng.random() < 0.35:
        # Decimals where the longer one is smaller: 0.8 against 0.75, the classic trap.
        short = rng.randint(2, 9) / 10
        long_ = round(short - rng.randint(1, 9) / 100, 2)
        a, b = (short, long_) if rng.random() < 0.5 else (long_, short)
        key_kind = "dec"
    else:
        x = rng.randint(12, 98)
        swapped = _swap_digits(x)
        y = swapped if swapped is not None and rng.random() < 0.5 else x + rng.choice((-7, -3, 3, 7, 11))
        a, b = (x, y) if rng.random() < 0.5 else (y, x)
        if a == b:
            b += 1
        key_kind = "int"
    right, other = (max(a, b), min(a, b)) if larger else (min(a, b), max(a, b))
    query = rng.choice(
        (f"Which is {word}, {_num(a)} or {_num(b)}?", f"Which number is {word}: {_num(a)} or {_num(b)}?")
    )
    error = f"is the {'smaller' if larger else 'larger'} of the two numbers ({_num(right)} is {word})"
    return _Instance(
        f"comparison_{word}", "comparison", f"cmp:{key_kind}:{word}:{_num(min(a, b))}:{_num(max(a, b))}", query,
        f"which of {_num(a)} and {_num(b)} is {word}", _num(right), _num(other),
        f"{_num(right)} is {word} than {_num(other if right != other else a)}", error,
        ("{v}", f"{{v}} is {word}.", f"Comparing {_num(a)} and {_num(b)} digit by digit, {{v}} is the {word} one."),
    )  # fmt: skip


# (from unit, to unit, factor, the wrong factor a slip uses, a wrong unit of the same kind)
_CONVERSIONS = (
    ("kilometres", "metres", 1000, 100, "centimetres"),
    ("metres", "centimetres", 100, 1000, "millimetres"),
    ("kilograms", "grams", 1000, 100, "milligrams"),
    ("hours", "minutes", 60, 100, "seconds"),
    ("minutes", "seconds", 60, 100, "hours"),
)


def _conversion(rng: random.Random) -> _Instance:
    big, small, factor, slip, other_unit = rng.choice(_CONVERSIONS)
    if rng.random() < 0.6:
        amount = rng.choice((rng.randint(2, 12), rng.randint(2, 9) + 0.5))
        src, dst, value, bad = big, small, amount * factor, amount * slip
        fact = f"{_qty(amount, big)} is {_qty(value, small)}, since 1 {big[:-1]} is {factor} {small}"
        factor_error = f"uses {slip} {small} per {big[:-1]} instead of {factor} (the answer is {_qty(value, small)})"
        subject = f"{_qty(amount, big)} in {small}"
    else:
        value = rng.randint(1, 12) * (0.5 if rng.random() < 0.3 else 1)
        amount = value * factor
        src, dst, bad = small, big, amount / slip
        fact = f"{_qty(amount, small)} is {_qty(value, big)}, since 1 {big[:-1]} is {factor} {small}"
        factor_error = f"divides by {slip} instead of {factor} (the answer is {_qty(value, big)})"
        subject = f"{_qty(amount, small)} in {big}"
    if rng.random() < 0.3 and src == big:
        wrong = f"{_qty(value, other_unit)}"
        error = f"has the right number but the wrong unit: {other_unit} instead of {dst}"
    else:
        wrong = f"{_qty(bad, dst)}"
        error = factor_error
    query = rng.choice(
        (
            f"How many {dst} are in {_qty(amount, src)}?",
            f"Convert {_qty(amount, src)} to {dst}.",
            f"What is {_qty(amount, src)} in {dst}?",
        )
    )
    return _Instance(
        f"convert_{src}_{dst}", "units", f"unit:{src}:{dst}:{_num(amount)}", query, subject,
        f"{_qty(value, dst)}", wrong, fact, error,
        (
            "{v}",
            f"{_qty(amount, src)} is {{v}}.",
            f"Since 1 {big[:-1]} is {factor} {small}, {_qty(amount, src)} is {{v}}.",
        ),
    )  # fmt: skip


def _off_by_one(rng: random.Random, value: int) -> int:
    return value + 1 if value == 0 or rng.random() < 0.5 else value - 1


def _counting(rng: random.Random) -> _Instance:
    kind = rng.choice(("letters", "letter", "items"))
    if kind == "letters":
        word = rng.choice(_WORDS)
        value = len(word)
        query = rng.choice((f"How many letters are in the word '{word}'?", f"Count the letters in '{word}'."))
        return _Instance(
            "count_letters", "counting", f"len:{word}", query, f"the number of letters in '{word}'", str(value),
            str(_off_by_one(rng, value)), f"'{word}' has {value} letters",
            f"is off by one: '{word}' has {value} letters",
            (
                "{v}",
                f"The word '{word}' has {{v}} letters.",
                f"Spelling it out ({' '.join(word)}), '{word}' has {{v}} letters.",
            ),
        )  # fmt: skip
    if kind == "letter":
        word = rng.choice([w for w in _WORDS if len(set(w)) < len(w)])
        letter = max(sorted(set(word)), key=word.count)
        value = word.count(letter)
        query = f"How many times does the letter '{letter}' appear in '{word}'?"
        return _Instance(
            "count_letter", "counting", f"occ:{letter}:{word}", query,
            f"how often '{letter}' appears in '{word}'", str(value), str(_off_by_one(rng, value)),
            f"'{letter}' appears {value} times in '{word}'", f"miscounts: '{letter}' appears {value} times in '{word}'",
            (
                "{v}",
                f"The letter '{letter}' appears {{v}} times in '{word}'.",
                f"Going through '{word}' letter by letter, '{letter}' appears {{v}} times.",
            ),
        )  # fmt: skip
    count = rng.randint(3, 8)
    items = rng.sample(_ITEMS, count)
    listing = ", ".join(items)
    query = f"How many items are in this list: {listing}?"
    return _Instance(
        "count_items", "counting", f"items:{listing}", query, "the number of items in the list", str(count),
        str(_off_by_one(rng, count)), f"the list has {count} items", f"is off by one: the list has {count} items",
        ("{v}", "The list has {v} items.", "Counting them one by one, there are {v} items in the list."),
    )  # fmt: skip


def _string_op(rng: random.Random) -> _Instance:
    kind = rng.choice(("reverse", "upper", "first", "last"))
    if kind == "upper":
        phrase = rng.choice(_PHRASES)
        value = phrase.upper()
        first, _, rest = phrase.partition(" ")
        wrong, error = rng.choice(
            (
                (phrase.title(), "capitalises only the first letter of each word"),
                (f"{first.upper()} {rest}", "leaves part of the phrase in lowercase"),
            )
        )
        return _Instance(
            "uppercase", "strings", f"upper:{phrase}", f"Write '{phrase}' in uppercase letters.",
            f"'{phrase}' in uppercase", value, wrong, f"'{phrase}' in uppercase is '{value}'", error,
            ("{v}", "In uppercase: {v}", "Converting every letter to a capital gives {v}."),
        )  # fmt: skip
    word = rng.choice(_WORDS)
    if kind == "reverse":
        value = word[::-1]
        chars = list(value)
        spots = [i for i in range(1, len(chars) - 1) if chars[i] != chars[i + 1]]
        i = rng.choice(spots)
        chars[i], chars[i + 1] = chars[i + 1], chars[i]
        query = rng.choice((f"Reverse the word '{word}'.", f"Write '{word}' backwards."))
        return _Instance(
            "reverse", "strings", f"reverse:{word}", query, f"'{word}' written backwards", value, "".join(chars),
            f"'{word}' backwards is '{value}'", f"has two letters out of order (the reverse is '{value}')",
            (
                "{v}",
                f"'{word}' reversed is '{{v}}'.",
                f"Reading '{word}' from the last letter to the first gives '{{v}}'.",
            ),
        )  # fmt: skip
    index, position = (0, "first") if kind == "first" else (-1, "last")
    value = word[index]
    candidates = [c for c in (word[1], word[-2], word[-1] if index == 0 else word[0]) if c != value]
    wrong = rng.choice(candidates)
    return _Instance(
        f"{position}_letter", "strings", f"{position}:{word}", f"What is the {position} letter of the word '{word}'?",
        f"the {position} letter of '{word}'", value, wrong, f"the {position} letter of '{word}' is '{value}'",
        f"is not the {position} letter of '{word}' (that is '{value}')",
        (
            "{v}",
            f"The {position} letter of '{word}' is '{{v}}'.",
            f"Spelling '{word}' out, the {position} letter is '{{v}}'.",
        ),
    )  # fmt: skip


def _fact(rng: random.Random) -> _Instance:
    if rng.random() < 0.75:
        country, capital, decoy = rng.choice(CAPITALS)
        if rng.random() < 0.6:
            wrong, error = decoy, f"is a large city in {country} but not its capital ({capital} is)"
        else:
            other = rng.choice([c for c in CAPITALS if c[0] != country])
            wrong, error = other[1], f"is the capital of {other[0]}, not of {country}"
        query = rng.choice((f"What is the capital of {country}?", f"Which city is the capital of {country}?"))
        return _Instance(
            "capital", "facts", f"capital:{country}", query, f"the capital of {country}", capital, wrong,
            f"the capital of {country} is {capital}", error,
            (
                "{v}",
                f"The capital of {country} is {{v}}.",
                f"{country}'s seat of government is in {{v}}, its capital city.",
            ),
        )  # fmt: skip
    position = rng.randrange(len(PLANETS))
    neighbour = position + 1 if position == 0 or (position < len(PLANETS) - 1 and rng.random() < 0.5) else position - 1
    planet, ordinal = PLANETS[position], _ORDINALS[position]
    if rng.random() < 0.5:
        return _Instance(
            "planet_at", "facts", f"planet:{position}", f"Which planet is {ordinal} from the Sun?",
            f"the {ordinal} planet from the Sun", planet, PLANETS[neighbour],
            f"the {ordinal} planet from the Sun is {planet}",
            f"is {_ORDINALS[neighbour]} from the Sun, not {ordinal}",
            (
                "{v}",
                f"The {ordinal} planet from the Sun is {{v}}.",
                "Counting outward from the Sun (Mercury, Venus, Earth, ...), it is {v}.",
            ),
        )  # fmt: skip
    return _Instance(
        "planet_position", "facts", f"order:{planet}", f"What is {planet}'s position in order from the Sun?",
        f"{planet}'s position from the Sun", _ORDINALS[position], _ORDINALS[neighbour],
        f"{planet} is the {ordinal} planet from the Sun", f"is the position of {PLANETS[neighbour]}, not of {planet}",
        ("{v}", f"{planet} is the {{v}} planet from the Sun.", f"Counting outward from Mercury, {planet} comes {{v}}."),
    )  # fmt: skip


_FAMILIES: tuple[tuple[Callable[[random.Random], _Instance], float], ...] = (
    (_addition, 1.0),
    (_subtraction, 0.8),
    (_multiplication, 1.2),
    (_comparison, 1.0),
    (_conversion, 1.0),
    (_counting, 1.0),
    (_string_op, 1.0),
    (_fact, 1.2),
)


def split_of(key: str) -> Split:
    """The split a task key belongs to: held-out when its SHA-256 falls in the lowest :data:`HELDOUT_SHARE` of the
    range. Fixed: no seed, no count, no wording enters it."""
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
    return "heldout" if bucket < HELDOUT_SHARE else "train"


def _check_args(n: int, split: str) -> None:
    if not isinstance(n, int) or n < 0:
        raise ConfigurationError(f"n must be a non-negative integer, got {n!r}")
    if split not in ("train", "heldout"):
        raise ConfigurationError(f"split must be 'train' or 'heldout', got {split!r}")


def _draw(rng: random.Random, split: Split, seen: set[str], make: Callable[[random.Random], _Instance]) -> _Instance:
    """An instance of ``split``, preferring keys not drawn yet (small tables repeat once exhausted)."""
    fallback: _Instance | None = None
    for tries in range(5000):
        if fallback is not None and tries >= 60:
            return fallback
        instance = make(rng)
        if split_of(instance.key) != split:
            continue
        if instance.key not in seen:
            return instance
        fallback = fallback or instance
    raise RuntimeError(f"no {split} instance found for {make.__name__}")  # pragma: no cover - both splits are large


def checkable_pairs(n: int, *, seed: int, split: Split) -> list[PreferencePair]:
    """``n`` seeded preference pairs whose right answer is computed (see the module docstring for the families, the
    wrong-answer kinds and the fixed held-out split). The same ``(n, seed, split)`` always gives the same pairs."""
    _check_args(n, split)
    rng = random.Random(f"cerm-checkable:{seed}:{split}")
    makers = [make for make, _ in _FAMILIES]
    weights = [weight for _, weight in _FAMILIES]
    seen: set[str] = set()
    pairs: list[PreferencePair] = []
    for i in range(n):
        make = rng.choices(makers, weights)[0]
        inst = _draw(rng, split, seen, make)
        seen.add(inst.key)
        assert inst.wrong != inst.answer, inst
        chosen_style = rng.randrange(3)
        rejected_style = chosen_style if rng.random() < 0.5 else rng.choice([s for s in range(3) if s != chosen_style])
        pairs.append(
            PreferencePair(
                id=f"checkable-{split}-{seed}-{i:05d}",
                prompt=inst.query,
                chosen=inst.styles[chosen_style].replace("{v}", inst.answer),
                rejected=inst.styles[rejected_style].replace("{v}", inst.wrong),
                source=CHECKABLE_SOURCE,
                category=inst.category,
                meta={
                    "family": "checkable",
                    "task": inst.task,
                    "key": inst.key,
                    "split": split,
                    "subject": inst.subject,
                    "answer": inst.answer,
                    "wrong": inst.wrong,
                    "fact": inst.fact,
                    "error": inst.error,
                    "same_style": chosen_style == rejected_style,
                },
            )
        )
    return pairs
