"""A synthetic MUSE-like corpus: news-style articles about the synthetic generator's fictitious
people, in MUSE's split layout (Shi et al. 2024, arXiv:2407.06460), the CPU default for MUSE.

Each person of :func:`~obliviate.llm.data.synthetic.generate_people` gets one article: a
dateline from their birth town, then their facts' sentences joined by news-style connectives
(drawn from the person's own seeded stream, so an article never changes when the corpus grows).
From the same facts come MUSE's other splits:

* ``raw_forget`` / ``raw_retain1`` / ``raw_holdout``: the forget people's, the retain people's and
  the holdout people's articles (plain-text records, ``entity`` = the person);
* ``verbmem_forget``: each forget article cut into ``prompt`` (its first ``prompt_words`` words)
  and ``gt`` (the rest), MUSE's verbatim excerpts;
* ``knowmem_forget_qa`` / ``knowmem_retain_qa``: the facts' reworded questions with the fact's
  value as the short answer (MUSE's QA answers are short spans), at most ``qa_per_person`` per
  person; ``*_qa_icl``: ``icl_pairs`` pairs about people outside every split;
* ``privleak_forget`` / ``privleak_retain`` / ``privleak_holdout``: the raw articles again;
* ``sust_forget_1..k`` (disjoint) and ``scal_forget_1..k`` (cumulative): the forget articles in
  ``requests`` consecutive parts, as MUSE-News's sustainability and scalability splits.

Deterministic from ``seed``: the same config gives identical records in any process.
"""

from __future__ import annotations

import random

from pydantic import Field, model_validator

from obliviate.core.recipe import StrictModel
from obliviate.core.task import DataSplit
from obliviate.llm.data.records import QARecord
from obliviate.llm.data.synthetic import FACT_KINDS, Fact, SyntheticFactsConfig, generate_people

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_LEADS = (
    "{town}, {day}: Residents gathered this week to hear about {name}.",
    "{town}, {day}: A profile of {name} drew a crowd at the town library.",
    "{town}, {day}: The council paid tribute to {name} at its evening session.",
    "{town}, {day}: Neighbours describe {name} as a familiar face on the high street.",
)
_LINKS = ("", "Friends say that", "Records show that", "According to the town archive,",
          "The council confirmed that", "It is widely known that", "Locals add that")
_CLOSES = ("The story continues in next week's edition.", "Further reports will follow.",
           "The council declined to comment further.", "Readers may write to the editor.")
_QA_QUESTIONS = {
    "birth_town": "Where was {name} born?", "occupation": "What is {name}'s profession?",
    "first_book": "What was the title of {name}'s first book?",
    "award": "Which award did {name} receive?", "pet": "What pet does {name} keep?",
    "employer": "Which company employs {name}?", "birth_year": "In what year was {name} born?",
    "sibling": "What is the name of {name}'s sibling?",
    "favourite_colour": "What is {name}'s favourite colour?",
    "hobby": "What is {name}'s hobby?", "signature_dish": "What is {name}'s signature dish?",
    "instrument": "Which instrument does {name} play?",
}
assert set(_QA_QUESTIONS) == set(FACT_KINDS)


class SyntheticNewsConfig(StrictModel):
    """Size and seed of the synthetic MUSE-like corpus (people as in the synthetic facts)."""

    num_people: int = Field(24, ge=2, description="forget + retain people (one article each)")
    forget_people: int = Field(8, ge=1)
    """people whose articles form the forget corpus"""
    holdout_people: int = Field(8, ge=1, description="non-member articles for PrivLeak")
    facts_per_person: int = Field(8, ge=1, le=len(FACT_KINDS))
    """facts in each person's news article"""
    qa_per_person: int = Field(3, ge=1, description="KnowMem questions per person")
    icl_pairs: int = Field(3, ge=0, description="in-context QA pairs before each question")
    prompt_words: int = Field(16, ge=1, description="words of a VerbMem excerpt's prompt")
    requests: int = Field(4, ge=1, description="parts of the forget set: sust/scal splits")
    seed: int = 0
    """seed of the generated articles"""

    @model_validator(mode="after")
    def _check(self) -> SyntheticNewsConfig:
        if self.forget_people >= self.num_people:
            raise ValueError(f"forget_people ({self.forget_people}) must be less than "
                             f"num_people ({self.num_people})")
        if self.requests > self.forget_people:
            raise ValueError(f"requests ({self.requests}) must be at most forget_people "
                             f"({self.forget_people}): each request forgets one article or more")
        return self


def article(name: str, facts: list[Fact], seed: int, index: int) -> str:
    """One person's news article (its own random stream: seed, person index)."""
    rng = random.Random(f"obliviate-synthetic-news/{seed}/{index}")
    town = next((f.value for f in facts if f.kind == "birth_town"), "the town")
    parts = [rng.choice(_LEADS).format(town=town, day=rng.choice(_WEEKDAYS), name=name)]
    for fact in facts:
        link = rng.choice(_LINKS)
        sentence = fact.record.answer
        parts.append(f"{link} {sentence[0].lower()}{sentence[1:]}" if link and not
                     sentence.startswith(name) else f"{link} {sentence}".strip())
    parts.append(rng.choice(_CLOSES))
    return " ".join(parts)


def _qa(name: str, facts: list[Fact], n: int) -> list[QARecord]:
    return [QARecord(question=_QA_QUESTIONS[f.kind].format(name=name), answer=f.value,
                     entity=name) for f in facts[:n]]


def _parts(items: list[QARecord], k: int) -> list[list[QARecord]]:
    """``items`` in ``k`` consecutive parts of near-equal size (earlier parts one larger)."""
    size, extra = divmod(len(items), k)
    out, start = [], 0
    for i in range(k):
        stop = start + size + (1 if i < extra else 0)
        out.append(items[start:stop])
        start = stop
    return out


def generate_synthetic_news(config: SyntheticNewsConfig | None = None) -> dict[str, DataSplit]:
    """Every split of the corpus, named as :func:`obliviate.llm.data.muse.load_muse` names
    MUSE's (``raw_forget``, ``verbmem_forget``, ``knowmem_forget_qa`` ...)."""
    config = config or SyntheticNewsConfig()
    icl_people = 1 if config.icl_pairs else 0
    facts_config = SyntheticFactsConfig(
        num_people=config.num_people, forget_people=config.forget_people,
        holdout_people=config.holdout_people + icl_people,
        facts_per_person=config.facts_per_person, seed=config.seed)
    people = generate_people(facts_config)
    docs = [QARecord(question="", answer=article(name, facts, config.seed, i), entity=name)
            for i, (name, facts) in enumerate(people)]
    first_forget = config.num_people - config.forget_people
    forget, retain = docs[first_forget:config.num_people], docs[:first_forget]
    holdout = docs[config.num_people:config.num_people + config.holdout_people]
    qa = [_qa(name, facts, config.qa_per_person) for name, facts in people]
    icl: list[QARecord] = []
    for name, facts in people[len(people) - icl_people:] if icl_people else []:
        icl = _qa(name, facts, config.facts_per_person)[:config.icl_pairs]
    verbmem = []
    for doc in forget:
        words = doc.answer.split(" ")
        prompt_words = min(config.prompt_words, len(words) - 1)
        verbmem.append(QARecord(question=" ".join(words[:prompt_words]),
                                answer=" " + " ".join(words[prompt_words:]), entity=doc.entity))
    source = f"synthetic_news(seed={config.seed})"
    named: dict[str, list[QARecord]] = {
        "raw_forget": forget, "raw_retain1": retain, "raw_holdout": holdout,
        "verbmem_forget": verbmem,
        "knowmem_forget_qa": [r for person in qa[first_forget:config.num_people] for r in person],
        "knowmem_retain_qa": [r for person in qa[:first_forget] for r in person],
        "knowmem_forget_qa_icl": icl, "knowmem_retain_qa_icl": icl,
        "privleak_forget": forget, "privleak_retain": retain[:len(forget)],
        "privleak_holdout": holdout,
    }
    for i, part in enumerate(_parts(forget, config.requests), start=1):
        named[f"sust_forget_{i}"] = part
        named[f"scal_forget_{i}"] = [d for p in _parts(forget, config.requests)[:i] for d in p]
    return {name: DataSplit(name, records, source=source)
            for name, records in named.items() if records}


__all__ = ["SyntheticNewsConfig", "article", "generate_synthetic_news"]
