"""The chat's knowledge base (bilingual passages with their sources) and the model facts filled into it.

Numbers about our models are read from the models' ``eval_results.json`` at load time, never typed
into the passages, so the chat says what the model cards say and "not measured yet" before training.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

LANGUAGES = ("en", "es")
#: said once, in place of every sentence whose number is missing (no trained model folder was found)
NOT_MEASURED = {
    "en": "Some of these numbers are not measured yet here: no trained model was found.",
    "es": "Algunas de estas cifras aún no se han medido aquí: no se encontró ningún modelo entrenado.",
}
PLACEHOLDER = re.compile(r"\{(\w+)\}")
SENTENCE_END = re.compile(r"(?<=[.!?])(\s+)")


@dataclass(frozen=True)
class Passage:
    """One knowledge-base entry: the same content in English and Spanish, with where it comes from."""

    id: str
    topic: str
    titles: dict[str, str]
    texts: dict[str, str]
    sources: dict[str, dict[str, str]]  # language -> {"name", "url"}; Spanish may cite a Spanish source
    questions: dict[str, tuple[str, ...]]  # language -> questions the passage answers (FAQ variants for retrieval)

    @classmethod
    def from_json(cls, entry: dict) -> Passage:
        source = entry["source"]
        return cls(
            id=entry["id"],
            topic=entry["topic"],
            titles={lang: entry[lang]["title"] for lang in LANGUAGES},
            texts={lang: entry[lang]["text"] for lang in LANGUAGES},
            sources={lang: entry[lang].get("source", source) for lang in LANGUAGES},
            questions={lang: tuple(entry[lang].get("questions", ())) for lang in LANGUAGES},
        )


def default_knowledge_path() -> Path:
    """The knowledge base shipped inside the package (package data), so a wheel or a Space has it."""
    return Path(str(resources.files("imagezoo.chat") / "knowledge" / "brain_tumours.json"))


def load_passages(path: str | Path | None = None) -> list[Passage]:
    """Every passage of the knowledge base at ``path`` (default: the shipped one)."""
    data = json.loads(Path(path or default_knowledge_path()).read_text(encoding="utf-8"))
    passages = [Passage.from_json(entry) for entry in data["passages"]]
    ids = [p.id for p in passages]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate passage ids in {path}")
    return passages


def default_models_dir() -> Path:
    """Where trained models live: ``$IMAGEZOO_MODELS_DIR`` or ``models`` (the repository layout)."""
    return Path(os.environ.get("IMAGEZOO_MODELS_DIR", "models"))


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.1f}%"


@dataclass(frozen=True)
class ModelFacts:
    """Measured numbers of the tumour-type classifier and the MRI gate, as the model cards report them."""

    type_accuracy: float | None = None
    type_macro_f1: float | None = None
    type_test_images: int | None = None
    gate_mri_accepted: float | None = None
    gate_min_refused: float | None = None

    @classmethod
    def from_models_dir(cls, models_dir: str | Path | None = None) -> ModelFacts:
        """Read ``brain-tumor-type`` and ``brain-mri-gate`` eval results; a missing model leaves its facts None."""
        root = Path(models_dir) if models_dir is not None else default_models_dir()
        return cls.from_folders(root / "brain-tumor-type", root / "brain-mri-gate")

    @classmethod
    def from_folders(cls, type_folder: str | Path, gate_folder: str | Path) -> ModelFacts:
        """The facts of the two model folders actually served (local, or a Hub download's snapshot)."""
        metrics = _read_json(Path(type_folder) / "eval_results.json").get("metrics", {})
        gate = _read_json(Path(gate_folder) / "eval_results.json").get("gate", {})
        f1s = [c["f1"] for c in metrics.get("per_class", {}).values()]
        return cls(
            type_accuracy=metrics.get("accuracy"),
            type_macro_f1=statistics.fmean(f1s) if f1s else None,
            type_test_images=metrics.get("n"),
            gate_mri_accepted=gate.get("accepted_mri"),
            gate_min_refused=gate.get("min_refused_loso"),
        )

    def placeholders(self) -> dict[str, str | None]:
        """The text each ``{placeholder}`` of the "models" passages becomes (``None``: not measured)."""
        return {
            "type_accuracy": _percent(self.type_accuracy),
            "type_macro_f1": _percent(self.type_macro_f1),
            "type_test_images": None if self.type_test_images is None else str(self.type_test_images),
            "gate_mri_accepted": _percent(self.gate_mri_accepted),
            "gate_min_refused": _percent(self.gate_min_refused),
        }

    def fill(self, text: str, language: str) -> str:
        """``text`` with its known placeholders replaced (other braces are left as written); a sentence
        whose number is not measured is left out, and :data:`NOT_MEASURED` says so once at the end."""
        values = self.placeholders()
        kept, missing = [], False
        pieces = SENTENCE_END.split(text)  # sentence, its following space or line breaks, sentence, ...
        for sentence, gap in zip(pieces[::2], [*pieces[1::2], ""]):
            if any(name in values and values[name] is None for name in PLACEHOLDER.findall(sentence)):
                missing = True
                continue
            kept.append(PLACEHOLDER.sub(lambda m: values.get(m.group(1)) or m.group(0), sentence) + gap)
        filled = "".join(kept).rstrip()
        return f"{filled} {NOT_MEASURED[language]}".lstrip() if missing else filled
