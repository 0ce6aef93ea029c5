"""Open-ended preference pairs: everyday requests (explain, describe, list, advise) with a good answer and a clearly
worse one whose defect a judge can name.

Why this family exists: checkable pairs teach a small judge the CE-RM format on short factual queries only, but the
demo judge must also close the format on prompts like MT-Bench's and LLMBar's (open requests, often with a stated
constraint such as "in one sentence" or "three tips"). These pairs put such requests in front of the student with
criteria that are generic yet specific to the request (relevance to the named topic, the stated constraint, substance,
clarity) and evaluations that explain a concrete defect. Each defect is unambiguous, so the programmatic teacher's
verdict is correct by construction:

* ``off_topic``: a good answer about another topic;
* ``refusal``: declines a harmless request without a reason;
* ``truncated``: the good answer cut off mid-sentence;
* ``wrong_language``: the right content in French (topics with a translation only);
* ``repeats_question``: restates the request and answers nothing;
* ``ignores_constraint``: right content, stated constraint broken (too many sentences, too few items or tips);
* ``vague``: generic filler with no information.

A fifth of the requests come wrapped in a longer message (context, politeness), and about one in seven as the
second user turn of a dialogue (rendered by :func:`cerm.protocol.format_dialogue`, turns kept in ``messages``), so the
student also meets query texts shaped like real prompts and multi-turn transcripts such as MT-Bench's.

The good answers are written here by hand (a topic table with a one-sentence explanation and three facts, and an
advice table with three tips per goal). The held-out split is by topic: a topic (or goal) whose SHA-256 key falls in
the lowest fifth is held out, so held-out queries are about subjects training never saw.

``meta`` carries what the teacher needs: ``family`` ("open"), ``task`` (the request template), ``request`` (the
request itself, without framing or earlier turns), ``topic``,
``constraint`` (the stated constraint in words, or ""), ``met`` (how the good answer meets it), ``defect`` (one of the
kinds above), ``note`` (what exactly is wrong with the rejected answer), ``key_point`` (a specific point the good
answer makes) and ``other_topic`` (for off-topic answers).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from cerm.protocol import Message, format_dialogue
from cerm.training._checkable import Split, _check_args, split_of
from cerm.training._pairs import PreferencePair

OPEN_SOURCE = "cerm-open"


@dataclass(frozen=True)
class _Topic:
    name: str
    sentence: str
    points: tuple[str, str, str]
    french: str = ""


TOPICS: tuple[_Topic, ...] = (
    _Topic(
        "photosynthesis",
        "Photosynthesis is the process by which plants use sunlight, water and carbon dioxide to make sugar and "
        "release oxygen.",
        (
            "It takes place mainly in the leaves, inside chloroplasts.",
            "Chlorophyll is the green pigment that captures the light.",
            "Most of the oxygen we breathe comes from photosynthesis.",
        ),
        "La photosynthèse est le processus par lequel les plantes utilisent la lumière du soleil, l'eau et le dioxyde "
        "de carbone pour produire du sucre et libérer de l'oxygène.",
    ),
    _Topic(
        "the water cycle",
        "The water cycle is the continuous movement of water as it evaporates, forms clouds, falls as rain or snow "
        "and flows back to the sea.",
        (
            "The Sun's heat drives evaporation from oceans and lakes.",
            "Water vapour cools and condenses into clouds.",
            "Rivers and groundwater carry the water back to the oceans.",
        ),
        "Le cycle de l'eau est le mouvement continu de l'eau qui s'évapore, forme des nuages, retombe en pluie ou en "
        "neige et retourne à la mer.",
    ),
    _Topic(
        "gravity",
        "Gravity is the force by which masses attract each other, which keeps us on the ground and the planets in "
        "orbit around the Sun.",
        (
            "The more mass an object has, the stronger its pull.",
            "Near the Earth's surface, falling objects speed up by about 9.8 metres per second every second.",
            "Newton described it as a force, and Einstein as the curvature of space-time.",
        ),
        "La gravité est la force par laquelle les masses s'attirent, ce qui nous retient au sol et maintient les "
        "planètes en orbite autour du Soleil.",
    ),
    _Topic(
        "volcanoes",
        "A volcano is an opening in the Earth's crust through which molten rock, ash and gases escape from deep "
        "below the surface.",
        (
            "Molten rock is called magma underground and lava once it erupts.",
            "Many volcanoes lie along the edges of tectonic plates.",
            "Eruptions can build whole mountains, such as Mount Fuji.",
        ),
        "Un volcan est une ouverture dans la croûte terrestre par laquelle la roche en fusion, les cendres et les gaz "
        "s'échappent des profondeurs.",
    ),
    _Topic(
        "the immune system",
        "The immune system is the body's network of cells and organs that recognises and destroys germs such as "
        "bacteria and viruses.",
        (
            "White blood cells are its main defenders.",
            "Antibodies mark invaders so that they can be destroyed.",
            "It remembers germs it has met, so a second infection is fought off faster.",
        ),
    ),
    _Topic(
        "inflation",
        "Inflation is the general rise in prices over time, which means the same amount of money buys less.",
        (
            "It is usually measured with a consumer price index.",
            "Central banks often raise interest rates to slow it down.",
            "Many central banks aim for about two percent a year.",
        ),
        "L'inflation est la hausse générale des prix au fil du temps, ce qui signifie qu'une même somme d'argent "
        "permet d'acheter moins.",
    ),
    _Topic(
        "the internet",
        "The internet is a worldwide network of computers that exchange data using shared rules called protocols.",
        (
            "Data travels in small packets that are put back together at the destination.",
            "The web is one service that runs on the internet, alongside email and others.",
            "It grew out of ARPANET, a research network from the late 1960s.",
        ),
    ),
    _Topic(
        "democracy",
        "Democracy is a system of government in which citizens hold power and choose their leaders through free "
        "elections.",
        (
            "Ancient Athens is often cited as an early example.",
            "It relies on rights such as free speech and a free press.",
            "Most modern democracies are representative: people elect others to decide for them.",
        ),
    ),
    _Topic(
        "the French Revolution",
        "The French Revolution was the period from 1789 to 1799 in which the people of France overthrew the monarchy "
        "and rebuilt society around liberty and equality.",
        (
            "It began with the storming of the Bastille on 14 July 1789.",
            "King Louis XVI was executed in 1793.",
            "It ended when Napoleon Bonaparte took power in 1799.",
        ),
        "La Révolution française est la période de 1789 à 1799 pendant laquelle le peuple français a renversé la "
        "monarchie et refondé la société sur la liberté et l'égalité.",
    ),
    _Topic(
        "DNA",
        "DNA is the molecule inside cells that carries the genetic instructions for how a living thing grows and "
        "works.",
        (
            "It has the shape of a double helix.",
            "Its code is written with four bases: A, T, C and G.",
            "Genes are stretches of DNA that code for proteins.",
        ),
    ),
    _Topic(
        "climate change",
        "Climate change is the long-term warming of the Earth's climate, driven mainly by greenhouse gases released "
        "by burning fossil fuels.",
        (
            "Carbon dioxide in the atmosphere traps heat.",
            "It raises sea levels and makes extreme weather more frequent.",
            "Cutting emissions and switching to clean energy can slow it.",
        ),
        "Le changement climatique est le réchauffement à long terme du climat de la Terre, causé surtout par les gaz "
        "à effet de serre issus de la combustion des énergies fossiles.",
    ),
    _Topic(
        "the phases of the Moon",
        "The phases of the Moon are the changing shapes of its sunlit side that we see from Earth as it orbits us "
        "about once a month.",
        (
            "The Moon makes no light of its own; it reflects sunlight.",
            "A full cycle from new moon to new moon takes about 29.5 days.",
            "At full moon the Earth lies between the Sun and the Moon.",
        ),
    ),
    _Topic(
        "recycling",
        "Recycling is the process of collecting used materials such as paper, glass and plastic and turning them "
        "into new products.",
        (
            "It saves raw materials and energy.",
            "It reduces the amount of waste sent to landfills.",
            "Materials usually have to be sorted and cleaned first.",
        ),
    ),
    _Topic(
        "the human heart",
        "The human heart is a muscular organ that pumps blood through the body, carrying oxygen and nutrients to "
        "every cell.",
        (
            "It has four chambers: two atria and two ventricles.",
            "At rest it beats about 60 to 100 times a minute.",
            "Arteries carry blood away from it and veins bring blood back.",
        ),
        "Le cœur humain est un organe musculaire qui pompe le sang dans tout le corps et apporte l'oxygène et les "
        "nutriments à chaque cellule.",
    ),
    _Topic(
        "machine learning",
        "Machine learning is a branch of computer science in which programs learn patterns from data instead of "
        "following hand-written rules.",
        (
            "A model is trained on examples and then makes predictions on new data.",
            "Common tasks include classification and regression.",
            "More and better data usually improves the results.",
        ),
    ),
    _Topic(
        "electricity",
        "Electricity is the flow of electric charge, usually electrons moving through a wire, that powers lights "
        "and machines.",
        (
            "Voltage is the push that drives the current.",
            "Current is measured in amperes.",
            "Metals such as copper conduct electricity well.",
        ),
    ),
    _Topic(
        "the Roman Empire",
        "The Roman Empire was the state centred on Rome that ruled the lands around the Mediterranean from 27 BC "
        "until its western half fell in AD 476.",
        (
            "Augustus was its first emperor.",
            "It built roads, aqueducts and cities across Europe.",
            "Its language, Latin, is the ancestor of French, Spanish and Italian.",
        ),
    ),
    _Topic(
        "earthquakes",
        "An earthquake is a sudden shaking of the ground caused by rocks slipping along faults in the Earth's crust.",
        (
            "Most happen where tectonic plates meet.",
            "Their strength is measured on the moment magnitude scale.",
            "Earthquakes under the sea can trigger tsunamis.",
        ),
        "Un séisme est une secousse soudaine du sol causée par le glissement des roches le long de failles dans la "
        "croûte terrestre.",
    ),
    _Topic(
        "the stock market",
        "The stock market is where people buy and sell shares, which are small pieces of ownership in companies.",
        (
            "Share prices rise and fall with supply and demand.",
            "Companies sell shares to raise money.",
            "Investors can earn dividends and gains when prices rise.",
        ),
    ),
    _Topic(
        "rainbows",
        "A rainbow is an arc of colours that appears when sunlight is bent and reflected inside raindrops.",
        (
            "Each drop splits white light into its colours.",
            "The colours run from red on the outside to violet on the inside.",
            "You see one when the Sun is behind you and rain is in front of you.",
        ),
        "Un arc-en-ciel est un arc de couleurs qui apparaît lorsque la lumière du soleil est déviée et réfléchie à "
        "l'intérieur des gouttes de pluie.",
    ),
    _Topic(
        "vaccines",
        "A vaccine is a preparation that trains the immune system to recognise a germ, so the body can fight it off "
        "quickly later.",
        (
            "Many vaccines contain weakened or inactivated germs, or parts of them.",
            "They have nearly eliminated diseases such as polio.",
            "Some need booster doses to keep protection strong.",
        ),
    ),
    _Topic(
        "sleep",
        "Sleep is a natural state of rest in which the body and brain recover, store memories and prepare to stay "
        "alert.",
        (
            "Adults usually need seven to nine hours a night.",
            "Deep sleep helps the body repair itself.",
            "Too little sleep harms mood, attention and health.",
        ),
    ),
    _Topic(
        "the printing press",
        "The printing press is a machine, developed in Europe by Johannes Gutenberg around 1440, that prints text by "
        "pressing inked type onto paper.",
        (
            "It made books far cheaper and faster to produce.",
            "It helped spread literacy and new ideas across Europe.",
            "The Gutenberg Bible is one of its most famous early works.",
        ),
    ),
    _Topic(
        "black holes",
        "A black hole is a region of space where gravity is so strong that nothing, not even light, can escape.",
        (
            "Many form when very massive stars collapse.",
            "Its boundary is called the event horizon.",
            "A supermassive black hole sits at the centre of our galaxy.",
        ),
    ),
    _Topic(
        "supply and demand",
        "Supply and demand is the economic idea that prices are set by how much of a good is available and how much "
        "people want it.",
        (
            "When demand rises and supply stays the same, prices go up.",
            "When supply rises and demand stays the same, prices fall.",
            "The price where the two balance is called the equilibrium price.",
        ),
    ),
    _Topic(
        "the solar system",
        "The solar system is the Sun together with everything that orbits it, including eight planets and their moons.",
        (
            "The four inner planets are small and rocky.",
            "Jupiter is the largest planet.",
            "It formed about 4.6 billion years ago.",
        ),
        "Le système solaire est le Soleil et tout ce qui tourne autour de lui, dont huit planètes et leurs lunes.",
    ),
)

ADVICE: tuple[tuple[str, tuple[str, str, str]], ...] = (
    (
        "sleep better",
        (
            "Go to bed and wake up at the same time every day.",
            "Avoid screens and caffeine in the hour before bed.",
            "Keep your bedroom dark, quiet and cool.",
        ),
    ),
    (
        "save money each month",
        (
            "Track your spending for a month to see where it goes.",
            "Set up an automatic transfer to savings on payday.",
            "Cook at home more often instead of eating out.",
        ),
    ),
    (
        "learn a new language",
        (
            "Practise a little every day rather than a lot once a week.",
            "Talk with native speakers as early as you can.",
            "Watch films and listen to music in the language.",
        ),
    ),
    (
        "prepare for a job interview",
        (
            "Research the company and the role beforehand.",
            "Practise answers to common questions out loud.",
            "Prepare a few questions to ask the interviewer.",
        ),
    ),
    (
        "stay focused while studying",
        (
            "Put your phone in another room.",
            "Work in blocks of about 25 minutes with short breaks.",
            "Set a clear goal for each session.",
        ),
    ),
    (
        "get more exercise",
        (
            "Walk or cycle for short trips instead of driving.",
            "Pick an activity you enjoy so that you keep doing it.",
            "Schedule workouts in your calendar like appointments.",
        ),
    ),
    (
        "reduce stress",
        (
            "Take a few slow, deep breaths when you feel tense.",
            "Get regular exercise and enough sleep.",
            "Talk about your worries with someone you trust.",
        ),
    ),
    (
        "make friends in a new city",
        (
            "Join a club or class about something you enjoy.",
            "Say yes to invitations, even small ones.",
            "Volunteer for a local cause.",
        ),
    ),
    (
        "write a clear email",
        (
            "Put the main point in the first sentence.",
            "Use a specific subject line and short paragraphs.",
            "Read it once more before sending to fix mistakes.",
        ),
    ),
    (
        "eat more healthily",
        (
            "Fill half your plate with vegetables.",
            "Drink water instead of sugary drinks.",
            "Plan your meals ahead so you rely less on snacks.",
        ),
    ),
    (
        "keep houseplants alive",
        (
            "Water only when the top of the soil feels dry.",
            "Put each plant where it gets the right amount of light.",
            "Use pots with drainage holes.",
        ),
    ),
    (
        "give a good presentation",
        (
            "Know your main message and repeat it at the end.",
            "Rehearse out loud several times.",
            "Use simple slides with few words.",
        ),
    ),
)

# Longer messages around a request ({request}): real prompts carry context and politeness around the ask.
_CONTEXTS = (
    "I'm preparing a short lesson and could use some help. {request}",
    "{request} Please keep it accurate; I will use it in a presentation tomorrow.",
    "Quick question for you. {request} Thanks!",
    "My friend and I were talking about this earlier and neither of us was sure. {request}",
)

_PLURAL_TOPICS = frozenset(
    {"volcanoes", "earthquakes", "rainbows", "vaccines", "black holes", "the phases of the Moon"}
)

_REFUSALS = (
    "I'm sorry, but I can't help with that request.",
    "I am not able to answer that.",
    "Sorry, I won't be providing an answer to this question.",
)


@dataclass(frozen=True)
class _Request:
    """A rendered request: the query, its good answer, and the constraint (if any) in words."""

    task: str
    query: str
    good: str
    constraint: str
    met: str
    broken: str  # the constraint-breaking answer, "" when the request has no constraint
    broken_note: str
    french: str  # the good answer in French, "" when unavailable


def _numbered(items: tuple[str, ...] | list[str]) -> str:
    return "\n".join(f"{i}. {item}" for i, item in enumerate(items, start=1))


def _topic_request(rng: random.Random, topic: _Topic, kind: str = "") -> _Request:
    name = topic.name
    verb = "are" if name in _PLURAL_TOPICS else "is"
    p1, p2, p3 = topic.points
    kind = kind or rng.choice(("one_sentence", "three_facts", "two_sentences", "tell_me", "paragraph"))
    if kind == "one_sentence":
        return _Request(
            kind, rng.choice((f"Explain {name} in one sentence.", f"In one sentence, what {verb} {name}?")),
            topic.sentence, "a single sentence", "it is a single sentence", f"{topic.sentence} {p1} {p2} {p3}",
            "uses four sentences instead of one", topic.french,
        )  # fmt: skip
    if kind == "three_facts":
        return _Request(
            kind, rng.choice((f"List three facts about {name}.", f"Give me three key facts about {name}.")),
            _numbered(topic.points), "exactly three facts", "it lists exactly three facts", _numbered([p1, p2]),
            "lists only two facts instead of three", "",
        )  # fmt: skip
    if kind == "two_sentences":
        return _Request(
            kind, f"Describe {name} in no more than two sentences.", f"{topic.sentence} {p1}",
            "at most two sentences", "it uses two sentences", f"{topic.sentence} {p1} {p2} {p3}",
            "uses four sentences where at most two were allowed", "",
        )  # fmt: skip
    if kind == "tell_me":
        return _Request(
            kind, rng.choice((f"Tell me about {name}.", f"Can you explain {name}?")), f"{topic.sentence} {p1} {p2}",
            "", "", "", "", "",
        )  # fmt: skip
    return _Request(
        kind, f"Write a short paragraph about {name} for a school report.", f"{topic.sentence} {p1} {p2} {p3}",
        "", "", "", "", "",
    )  # fmt: skip


def _advice_request(rng: random.Random, goal: str, tips: tuple[str, str, str], kind: str = "") -> _Request:
    kind = kind or rng.choice(("three_tips", "one_tip", "advice"))
    t1, t2, t3 = tips
    if kind == "three_tips":
        return _Request(
            kind, f"How can I {goal}? Give me three tips.", "Here are three tips:\n" + _numbered(tips),
            "exactly three tips", "it gives exactly three tips", f"Here is a tip: {t1}",
            "gives only one tip instead of three", "",
        )  # fmt: skip
    if kind == "one_tip":
        return _Request(
            kind, f"What is one thing I can do to {goal}? Answer in one sentence.", t1, "a one-sentence answer",
            "it answers in one sentence", f"{t1} {t2} {t3}", "uses three sentences instead of one", "",
        )  # fmt: skip
    return _Request(
        kind, rng.choice((f"I want to {goal}. Any advice?", f"Do you have any advice on how to {goal}?")),
        f"A few ideas that help:\n- {t1}\n- {t2}\n- {t3}", "", "", "", "", "",
    )  # fmt: skip


def _truncate(rng: random.Random, text: str) -> str:
    words = text.split(" ")
    cut = max(3, int(len(words) * rng.uniform(0.35, 0.65)))
    return " ".join(words[:cut]).rstrip(".,;:")


def open_ended_pairs(n: int, *, seed: int, split: Split) -> list[PreferencePair]:
    """``n`` seeded open-ended pairs (see the module docstring); the held-out split is by topic and fixed."""
    _check_args(n, split)
    rng = random.Random(f"cerm-open:{seed}:{split}")
    topics = [t for t in TOPICS if split_of(f"topic:{t.name}") == split]
    goals = [g for g in ADVICE if split_of(f"advice:{g[0]}") == split]
    pairs: list[PreferencePair] = []
    for i in range(n):
        is_advice = rng.random() < 0.3
        if is_advice:
            goal, tips = rng.choice(goals)
            subject = goal
            request = _advice_request(rng, goal, tips)
            key_point = tips[0]
        else:
            topic = rng.choice(topics)
            subject = topic.name
            request = _topic_request(rng, topic)
            key_point = topic.sentence.split(",")[0].rstrip(".")
        defects = ["off_topic", "refusal", "truncated", "repeats_question", "vague"]
        if request.constraint:
            defects += ["ignores_constraint", "ignores_constraint"]
        if request.french:  # only single-sentence explanations of a topic with a translation have one
            defects.append("wrong_language")
        defect = rng.choice(defects)
        other_topic = ""
        if defect == "off_topic":
            if is_advice:
                other_goal, other_tips = rng.choice([g for g in ADVICE if g[0] != subject])
                other_topic = other_goal
                rejected = _advice_request(rng, other_goal, other_tips, request.task).good
                note = f"gives advice on how to {other_goal} instead of how to {subject}"
            else:
                other = rng.choice([t for t in TOPICS if t.name != subject])
                other_topic = other.name
                rejected = _topic_request(rng, other, request.task).good
                note = f"talks about {other.name} instead of {subject}"
        elif defect == "refusal":
            rejected, note = rng.choice(_REFUSALS), "refuses a harmless request without giving any reason"
        elif defect == "truncated":
            rejected, note = _truncate(rng, request.good), "stops in the middle of a sentence and never finishes"
        elif defect == "repeats_question":
            rejected = rng.choice((request.query, f"You asked: {request.query}", f"{request.query} {request.query}"))
            note = "only repeats the question and gives no answer"
        elif defect == "vague":
            opener = (
                f"Trying to {subject} is a common goal, and there are many ways to go about it. Everyone is "
                "different, so it really depends on the person."
                if is_advice
                else f"{subject[0].upper()}{subject[1:]} is a very interesting subject that many people talk about. "
                "There is a lot to say about it, and it matters in many ways."
            )
            rejected = rng.choice(
                (
                    opener,
                    "That is a great question. It depends on many factors, and everyone has a different view, so "
                    "there is no simple answer.",
                )
            )
            note = f"is generic filler with no specific information about {subject}"
        elif defect == "ignores_constraint":
            rejected, note = request.broken, request.broken_note
        else:
            rejected, note = request.french, "is written in French although the question was asked in English"
        query = request.query
        messages: tuple[Message, ...] | None = None
        framing = rng.random()
        others = [t for t in topics if t.name != subject]
        if framing < 0.2:  # the request inside a longer message, as real users write them
            query = rng.choice(_CONTEXTS).replace("{request}", request.query)
        elif framing < 0.35 and others:  # the request as the second turn of a dialogue
            first = _topic_request(rng, rng.choice(others), "one_sentence")
            messages = (
                Message(role="user", content=first.query),
                Message(role="assistant", content=first.good),
                Message(role="user", content=request.query),
            )
            query = format_dialogue(messages)
        pairs.append(
            PreferencePair(
                id=f"open-{split}-{seed}-{i:05d}",
                prompt=query,
                messages=messages,
                chosen=request.good,
                rejected=rejected,
                source=OPEN_SOURCE,
                category="advice" if is_advice else "explain",
                meta={
                    "family": "open",
                    "task": request.task,
                    "split": split,
                    "request": request.query,
                    "topic": subject,
                    "constraint": request.constraint,
                    "met": request.met,
                    "defect": defect,
                    "note": note,
                    "key_point": key_point,
                    "other_topic": other_topic,
                },
            )
        )
    return pairs
