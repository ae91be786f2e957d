"""English or Spanish? The chat answers in the language of the question."""

from __future__ import annotations

from lingua import Language, LanguageDetector, LanguageDetectorBuilder

from imagezoo.caching import load_once

CODES = {Language.ENGLISH: "en", Language.SPANISH: "es"}


@load_once
def _detector() -> LanguageDetector:
    # restricted to the two languages we answer in: lingua is accurate on short questions that way
    return LanguageDetectorBuilder.from_languages(*CODES).build()


def detect_language(text: str) -> str:
    """``"en"`` or ``"es"`` for ``text``; English when lingua cannot tell (e.g. "MRI?")."""
    return CODES.get(_detector().detect_language_of(text), "en")


def language_confidence(text: str, language: str) -> float:
    """lingua's confidence, 0 to 1, that ``text`` is in ``language`` rather than the other one."""
    return _detector().compute_language_confidence(text, {code: lang for lang, code in CODES.items()}[language])
