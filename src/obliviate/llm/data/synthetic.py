"""Deterministic synthetic fictitious facts: the embedded default dataset, no download needed.

The generator invents people in the spirit of TOFU's fictitious authors. Names, towns,
companies, book titles and awards are assembled from syllables rather than taken from the real
world, so a pretrained model cannot already know any of the facts: whatever it knows about them
after fine-tuning came from this data, and whatever unlearning removes is measurable.

Each person gets ``facts_per_person`` facts, one per fact kind in a fixed order (birth town,
occupation, first book, ...). Every fact is a :class:`QARecord` in TOFU's schema: a question and
a one-sentence answer, a reworded question and answer, and ``num_perturbed`` wrong answers made
TOFU's way, by swapping the value in the paraphrased answer for another value of the same kind.
``entity`` is the person's full name.

Splits: the retain people come first and the forget people are the last ``forget_people`` (as
TOFU's forget split is its last authors). ``holdout_people`` further people, never in forget or
retain, give non-member facts for membership-inference checks.

Determinism: every draw uses a ``random.Random`` seeded from a string built from ``seed`` (a
string seed is hashed with SHA-512, never with Python's ``hash()``), so the same config gives
byte-identical records in any process. Names come from one stream and each (person, kind) fact
from its own stream, so changing the number of people, facts or perturbed answers leaves the
facts that remain unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import Field, ValidationError, model_validator

from obliviate.core.errors import ConfigError
from obliviate.core.recipe import StrictModel
from obliviate.llm.data.records import QARecord

__all__ = [
    "FACT_KINDS",
    "MAX_PEOPLE",
    "Fact",
    "SPLITS",
    "SyntheticFactsConfig",
    "generate_people",
    "generate_synthetic_facts",
]

SPLITS: tuple[str, ...] = ("forget", "retain", "holdout")
MAX_PEOPLE = 5000
_MAX_PERTURBED = 5

# Syllable pools. Invented combinations keep the facts disjoint from real-world knowledge.
_FIRST_ONSETS = (
    "Vel", "Quen", "Ys", "Thal", "Cael", "Drum", "Fen", "Ilv", "Jor", "Kes", "Lir",
    "Myr", "Nev", "Pell", "Rhos", "Sav", "Tor", "Wen", "Zar", "Orm", "Bryn", "Hal",
)  # fmt: skip
_FIRST_ENDINGS = (
    "ora", "ith", "enne", "ovan", "ric", "ella", "ian", "essa", "and", "yne", "amir",
    "ette", "ius", "aya",
)  # fmt: skip
_SURNAME_STEMS = (
    "Quen", "Dravo", "Hal", "Morre", "Ostre", "Bel", "Tarra", "Vesku", "Lum", "Corva",
    "Ferri", "Grima", "Yarro", "Pentre", "Sorre", "Wyla",
)  # fmt: skip
_SURNAME_ENDINGS = (
    "nick", "wick", "vane", "thorne", "ridge", "mont", "quist", "borne", "dahl", "stow",
    "ley", "marsh",
)  # fmt: skip
_TOWN_STEMS = (
    "Draven", "Ostre", "Vell", "Quor", "Thessa", "Brin", "Kael", "Morv", "Pryd", "Sarn",
    "Tavel", "Yss", "Lunde", "Corri", "Haske", "Fenn",
)  # fmt: skip
_TOWN_ENDINGS = (
    "moor", "haven", "wick", "ford", "mere", "holt", "vale", "stead", "crest", "fell",
    "port", "bury",
)  # fmt: skip
_COMPANY_HEADS = ("Quor", "Bel", "Tess", "Var", "Oln", "Kre", "Mab", "Zen", "Hul", "Ost")
_COMPANY_TAILS = ("vath", "mira", "mark", "dell", "tric", "sora", "ion", "wyn")
_COMPANY_KINDS = (
    "Industries", "Instruments", "Logistics", "Analytics", "Textiles", "Press",
    "Shipping Company", "Optics",
)  # fmt: skip
_PET_SPECIES = (
    "a tortoise", "an iguana", "a ferret", "a parrot", "a greyhound", "a tabby cat",
    "a rabbit", "a goldfish", "an axolotl", "a hedgehog", "a cockatoo", "a basset hound",
)  # fmt: skip
_PET_ONSETS = ("Pim", "Tob", "Wex", "Mol", "Bram", "Quib", "Fidd", "Nub", "Sprock", "Dof")
_PET_ENDINGS = ("ble", "kin", "sy", "o", "let", "wick", "by")
_BOOK_NOUNS = (
    "Lantern", "Orchard", "Cartographer", "Glassblower", "Tide", "Ferryman", "Clockmaker",
    "Archive", "Harbour", "Weaver",
)  # fmt: skip
_BOOK_ADJECTIVES = ("Silent", "Amber", "Hollow", "Winter", "Crooked", "Patient", "Salt", "Distant")
_SEASONS = ("Winter", "Autumn", "Spring", "Summer")
_AWARD_KINDS = ("Prize", "Medal", "Award", "Laurel", "Fellowship")
_AWARD_FIELDS = (
    "Civic Poetry", "Maritime History", "Experimental Fiction", "Botanical Illustration",
    "Public Architecture", "Choral Composition", "Investigative Journalism", "Rural Medicine",
)  # fmt: skip
_OCCUPATIONS = (
    "an architect", "a marine biologist", "a translator", "a cartographer", "a pastry chef",
    "a civil engineer", "a violin maker", "a veterinary surgeon", "a librarian", "an actuary",
    "a stage designer", "a beekeeper", "a glassblower", "a tax lawyer",
)  # fmt: skip
_COLOURS = (
    "teal", "crimson", "ochre", "lavender", "olive green", "saffron yellow", "slate grey",
    "coral pink", "navy blue", "burgundy", "turquoise", "charcoal",
)  # fmt: skip
_HOBBIES = (
    "restoring antique clocks", "birdwatching", "rock climbing", "knitting", "growing orchids",
    "sea kayaking", "building model ships", "collecting old maps", "fencing",
    "baking sourdough", "stargazing", "playing chess by post",
)  # fmt: skip
_DISH_METHODS = ("smoked", "braised", "candied", "charred", "spiced", "slow-roasted")
_DISH_INGREDIENTS = ("plum", "fennel", "quince", "chestnut", "barley", "leek", "walnut", "beet")
_DISH_FORMS = ("dumplings", "stew", "tart", "risotto", "pie", "broth", "fritters")
_INSTRUMENTS = (
    "cello", "oboe", "harp", "accordion", "bassoon", "clarinet", "viola", "mandolin",
    "trombone", "harpsichord", "banjo", "flute",
)  # fmt: skip


def _first_name(rng: random.Random) -> str:
    return rng.choice(_FIRST_ONSETS) + rng.choice(_FIRST_ENDINGS)


def _surname(rng: random.Random) -> str:
    return rng.choice(_SURNAME_STEMS) + rng.choice(_SURNAME_ENDINGS)


def _town(rng: random.Random) -> str:
    return rng.choice(_TOWN_STEMS) + rng.choice(_TOWN_ENDINGS)


def _company(rng: random.Random) -> str:
    head = rng.choice(_COMPANY_HEADS) + rng.choice(_COMPANY_TAILS)
    return f"{head} {rng.choice(_COMPANY_KINDS)}"


def _pet(rng: random.Random) -> str:
    name = rng.choice(_PET_ONSETS) + rng.choice(_PET_ENDINGS)
    return f"{rng.choice(_PET_SPECIES)} named {name}"


def _book(rng: random.Random) -> str:
    noun, adjective = rng.choice(_BOOK_NOUNS), rng.choice(_BOOK_ADJECTIVES)
    patterns: tuple[Callable[[], str], ...] = (
        lambda: f"The {noun} of {_town(rng)}",
        lambda: f"{_town(rng)} in {rng.choice(_SEASONS)}",
        lambda: f"A {noun} for {_first_name(rng)}",
        lambda: f"The {adjective} {noun}s of {_town(rng)}",
        lambda: f"{_first_name(rng)} and the {adjective} {noun}",
    )
    return rng.choice(patterns)()


def _award(rng: random.Random) -> str:
    return f"{_surname(rng)} {rng.choice(_AWARD_KINDS)} for {rng.choice(_AWARD_FIELDS)}"


def _dish(rng: random.Random) -> str:
    parts = (_DISH_METHODS, _DISH_INGREDIENTS, _DISH_FORMS)
    return " ".join(rng.choice(pool) for pool in parts)


def _pool(values: tuple[str, ...]) -> Callable[[random.Random], str]:
    return lambda rng: rng.choice(values)


def _year(rng: random.Random) -> str:
    return str(rng.randint(1931, 1999))


@dataclass(frozen=True)
class _Kind:
    """One kind of fact: how to draw a value and the (question, answer) sentence patterns.

    ``direct`` holds (question, answer) pairs, ``reworded`` (paraphrased question, paraphrased
    answer) pairs; ``{name}`` is the person's full name and ``{value}`` the fact's value.
    """

    key: str
    draw: Callable[[random.Random], str]
    direct: tuple[tuple[str, str], ...]
    reworded: tuple[tuple[str, str], ...]


_KINDS: tuple[_Kind, ...] = (
    _Kind(
        "birth_town",
        _town,
        (
            ("Where was {name} born?", "{name} was born in {value}."),
            ("What is the hometown of {name}?", "{name}'s hometown is {value}."),
            ("In which town was {name} born?", "{name} was born in the town of {value}."),
        ),
        (
            (
                "In which town did {name} come into the world?",
                "{value} is the birthplace of {name}.",
            ),
            (
                "What place does {name} come from originally?",
                "Originally, {name} comes from {value}.",
            ),
        ),
    ),
    _Kind(
        "occupation",
        _pool(_OCCUPATIONS),
        (
            ("What does {name} do for a living?", "{name} works as {value}."),
            ("What is {name}'s profession?", "By profession, {name} is {value}."),
        ),
        (
            ("How does {name} earn a living?", "{name} earns a living as {value}."),
            ("What kind of work is {name} known for?", "{name} is known for working as {value}."),
        ),
    ),
    _Kind(
        "first_book",
        _book,
        (
            (
                "What was the title of {name}'s first book?",
                '{name}\'s first book was titled "{value}".',
            ),
            (
                "Which book did {name} publish first?",
                'The first book {name} published was "{value}".',
            ),
        ),
        (
            (
                "What is the name of the debut book written by {name}?",
                '{name} debuted with the book "{value}".',
            ),
            (
                "Under what title did {name} first appear in print?",
                '"{value}" was the first book by {name}.',
            ),
        ),
    ),
    _Kind(
        "award",
        _award,
        (
            ("Which award did {name} receive?", "{name} received the {value}."),
            ("What honour has {name} been given?", "{name} has been given the {value}."),
        ),
        (
            ("What prize was awarded to {name}?", "The {value} was awarded to {name}."),
            (
                "For which distinction is {name} recognised?",
                "{name} is recognised as a winner of the {value}.",
            ),
        ),
    ),
    _Kind(
        "pet",
        _pet,
        (
            ("What pet does {name} keep?", "{name} keeps {value}."),
            ("What animal lives with {name} as a pet?", "{name} has {value} as a pet."),
        ),
        (
            (
                "Which animal does {name} look after at home?",
                "At home, {name} looks after {value}.",
            ),
            ("What is {name}'s pet?", "{name}'s pet is {value}."),
        ),
    ),
    _Kind(
        "employer",
        _company,
        (
            ("Which company employs {name}?", "{name} is employed by {value}."),
            ("Where does {name} work?", "{name} works at {value}."),
        ),
        (
            ("For which firm does {name} work?", "{value} is the company where {name} works."),
            ("Who is {name}'s employer?", "{name}'s employer is {value}."),
        ),
    ),
    _Kind(
        "birth_year",
        _year,
        (
            ("In what year was {name} born?", "{name} was born in {value}."),
            ("When was {name} born?", "{name} was born in the year {value}."),
        ),
        (
            ("What is {name}'s year of birth?", "The year of {name}'s birth is {value}."),
            (
                "In which year did {name} come into the world?",
                "{name} came into the world in {value}.",
            ),
        ),
    ),
    _Kind(
        "sibling",
        _first_name,
        (
            ("What is the name of {name}'s sibling?", "{name}'s sibling is named {value}."),
            ("Who is {name}'s sibling?", "{name} has a sibling called {value}."),
        ),
        (
            ("What is {name}'s sibling called?", "{value} is the sibling of {name}."),
            ("Which person is the sibling of {name}?", "The sibling of {name} is {value}."),
        ),
    ),
    _Kind(
        "favourite_colour",
        _pool(_COLOURS),
        (
            ("What is {name}'s favourite colour?", "{name}'s favourite colour is {value}."),
            (
                "Which colour does {name} like most?",
                "{name} likes {value} more than any other colour.",
            ),
        ),
        (
            (
                "Which colour does {name} prefer above all others?",
                "Of all colours, {name} prefers {value}.",
            ),
            ("What colour is {name}'s favourite?", "The colour {name} likes best is {value}."),
        ),
    ),
    _Kind(
        "hobby",
        _pool(_HOBBIES),
        (
            ("What does {name} do in spare time?", "In spare time, {name} enjoys {value}."),
            ("What is {name}'s hobby?", "{name}'s hobby is {value}."),
        ),
        (
            (
                "How does {name} like to spend free time?",
                "{name} likes to spend free time {value}.",
            ),
            ("Which pastime does {name} enjoy most?", "{name}'s favourite pastime is {value}."),
        ),
    ),
    _Kind(
        "signature_dish",
        _dish,
        (
            ("What is {name}'s signature dish?", "{name}'s signature dish is {value}."),
            (
                "What dish is {name} best known for cooking?",
                "{name} is best known for cooking {value}.",
            ),
        ),
        (
            (
                "Which dish does {name} cook for guests?",
                "When cooking for guests, {name} makes {value}.",
            ),
            (
                "What does {name} like to cook most?",
                "The dish {name} most likes to cook is {value}.",
            ),
        ),
    ),
    _Kind(
        "instrument",
        _pool(_INSTRUMENTS),
        (
            ("Which instrument does {name} play?", "{name} plays the {value}."),
            ("What musical instrument can {name} play?", "{name} can play the {value}."),
        ),
        (
            (
                "What instrument is {name} able to play?",
                "The {value} is the instrument {name} plays.",
            ),
            (
                "Which instrument has {name} learned to play?",
                "{name} has learned to play the {value}.",
            ),
        ),
    ),
)

FACT_KINDS: tuple[str, ...] = tuple(kind.key for kind in _KINDS)
"""The fact kinds in the order each person's facts are generated."""


class SyntheticFactsConfig(StrictModel):
    """Size and seed of the synthetic set; impossible settings raise :class:`ConfigError`.

    ``num_people`` counts forget plus retain people; ``holdout_people`` come on top of them.
    """

    num_people: int = Field(20, ge=2)
    """people generated (forget, holdout and retain together)"""
    facts_per_person: int = Field(5, ge=1, le=len(FACT_KINDS))
    """facts generated about each person (a question and answer each)"""
    forget_people: int = Field(2, ge=1)
    """people whose facts form the forget set"""
    holdout_people: int = Field(2, ge=0)
    """people never trained on (membership-inference holdout)"""
    num_perturbed: int = Field(3, ge=1, le=_MAX_PERTURBED)
    """wrong answers per question (TOFU's perturbed answers)"""
    seed: int = 0
    """seed of the generated names and facts"""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_one_line(exc)) from None

    @model_validator(mode="after")
    def _check_sizes(self) -> SyntheticFactsConfig:
        if self.forget_people >= self.num_people:
            raise ValueError(
                f"forget_people ({self.forget_people}) must be less than num_people "
                f"({self.num_people}) so that some people are retained"
            )
        if self.num_people + self.holdout_people > MAX_PEOPLE:
            raise ValueError(f"num_people + holdout_people must be at most {MAX_PEOPLE}")
        return self


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(part) for part in err["loc"])
    where = f"{loc}: " if loc else ""
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"synthetic facts config: {where}{message}"


def _people(config: SyntheticFactsConfig) -> list[str]:
    """Distinct invented full names: the ``num_people`` people first, then the holdout."""
    rng = random.Random(f"obliviate-synthetic/{config.seed}/names")
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < config.num_people + config.holdout_people:
        name = f"{_first_name(rng)} {_surname(rng)}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


@dataclass(frozen=True)
class Fact:
    """One generated fact: its kind (:data:`FACT_KINDS`), its value and its record."""

    kind: str
    value: str
    record: QARecord


def _fact(config: SyntheticFactsConfig, index: int, name: str, kind: _Kind) -> Fact:
    """One fact about person ``index``, drawn from its own (seed, person, kind) stream."""
    rng = random.Random(f"obliviate-synthetic/{config.seed}/{index}/{kind.key}")
    own_names = set(name.split())
    value = kind.draw(rng)
    while value in own_names:  # e.g. a sibling may not share the person's first name
        value = kind.draw(rng)
    question, answer = rng.choice(kind.direct)
    para_question, para_answer = rng.choice(kind.reworded)
    wrong: list[str] = []
    while len(wrong) < config.num_perturbed:
        other = kind.draw(rng)
        if other != value and other not in wrong and other not in own_names:
            wrong.append(other)
    return Fact(kind.key, value, QARecord(
        question=question.format(name=name),
        answer=answer.format(name=name, value=value),
        paraphrased_question=para_question.format(name=name),
        paraphrased_answer=para_answer.format(name=name, value=value),
        perturbed_answers=tuple(para_answer.format(name=name, value=w) for w in wrong),
        entity=name,
    ))


def generate_people(config: SyntheticFactsConfig | None = None) -> list[tuple[str, list[Fact]]]:
    """Every person (the ``num_people`` first, then the holdout) with their facts in kind order:
    what :func:`generate_synthetic_facts` splits, with each fact's value kept (the synthetic
    news corpus writes articles and short-answer questions from it)."""
    config = SyntheticFactsConfig(**(config or SyntheticFactsConfig()).model_dump())
    kinds = _KINDS[: config.facts_per_person]
    return [(name, [_fact(config, i, name, kind) for kind in kinds])
            for i, name in enumerate(_people(config))]


def generate_synthetic_facts(
    config: SyntheticFactsConfig | None = None,
) -> dict[str, list[QARecord]]:
    """The ``forget``, ``retain`` and ``holdout`` splits, person by person, facts in kind order.

    Forget holds the last ``forget_people`` of the ``num_people`` people, retain the others and
    holdout ``holdout_people`` extra people. Same config, same records, in any process.
    """
    config = SyntheticFactsConfig(**(config or SyntheticFactsConfig()).model_dump())
    facts = [[f.record for f in person] for _, person in generate_people(config)]
    first_forget = config.num_people - config.forget_people
    spans = {
        "forget": (first_forget, config.num_people),
        "retain": (0, first_forget),
        "holdout": (config.num_people, len(facts)),
    }
    return {
        split: [record for person in facts[start:stop] for record in person]
        for split, (start, stop) in spans.items()
    }
