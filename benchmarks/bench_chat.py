"""Brain chat latency and quality on the test questions, in one run.

    python benchmarks/bench_chat.py

Loads ``Chat`` (shipped knowledge base, MiniLM from its wheel) and times, for every question of
``tests/data/chat_questions.json``, ``retrieve`` (language detection, query embedding, both BM25 indexes,
fusion) and ``answer`` (rules, retrieval, relevance check, text), ``--rounds`` times each after a
warm-up, interleaved so the machine's drift hits all questions alike. Also reports top-1 / top-3
accuracy per language, the refusal rate of the questions that must be refused (and the false refusals
of the answerable ones), the relevance signals the off-topic threshold was chosen from, and top-1 on
the follow-up conversations (``tests/data/chat_followups.json``) with and without the earlier questions.
Results go to ``benchmarks/results/chat.json`` and are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from imagezoo.batch import available_cpus
from imagezoo.chat import Chat

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", default=str(ROOT / "tests" / "data" / "chat_questions.json"))
    parser.add_argument("--followups", default=str(ROOT / "tests" / "data" / "chat_followups.json"),
                        help="conversations scored turn by turn ('' to skip)")
    parser.add_argument("--knowledge", help="knowledge-base JSON (default: the one shipped in the package)")
    parser.add_argument("--models-dir", default=str(ROOT / "models"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "chat.json"))
    return parser.parse_args()


def percentiles(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}


def accuracy(chat: Chat, answerable: list[dict]) -> dict[str, dict[str, float]]:
    """Top-1 and top-3 retrieval accuracy per language and overall."""
    hits = defaultdict(list)
    for q in answerable:
        ids = [passage_id for passage_id, _ in chat.retrieve(q["question"], k=3)]
        for group in (q["language"], "all"):
            hits[group].append((ids[0] == q["expected"], q["expected"] in ids))
    return {
        group: {"n": len(h), "top1": float(np.mean([a for a, _ in h])), "top3": float(np.mean([b for _, b in h]))}
        for group, h in sorted(hits.items())
    }


def followup_accuracy(chat: Chat, conversations: list[dict]) -> dict[str, dict[str, float]]:
    """Top-1 of each turn kind (first question, follow-up, change of subject) with the conversation's earlier
    questions (``in_context``) and without them (``alone``, what a chat without history answers)."""
    hits = defaultdict(list)
    for conversation in conversations:
        history: list[str] = []
        for turn in conversation["turns"]:
            kind = "switch" if turn.get("switch") else "follow-up" if history else "first"
            alone = chat.retrieve(turn["question"], k=1)[0][0] == turn["expected"]
            in_context = chat.retrieve(turn["question"], k=1, history=history)[0][0] == turn["expected"]
            for group in (kind, f"{kind}_{conversation['language']}"):
                hits[group].append((alone, in_context))
            history.append(turn["question"])
    return {group: {"n": len(h), "alone": float(np.mean([a for a, _ in h])),
                    "in_context": float(np.mean([c for _, c in h]))} for group, h in sorted(hits.items())}


def relevance_margins(chat: Chat, questions: dict) -> dict[str, dict[str, float]]:
    """Per language, the lowest best-passage similarity of the answerable questions and the highest of
    the off-topic ones: the off-topic threshold must lie between them."""
    margins: dict[str, dict[str, float]] = defaultdict(dict)
    for kind, rows, pick in (("answerable_min", questions["answerable"], min),
                             ("off_topic_max", [q for q in questions["refused"] if q["why"] == "off-topic"], max)):
        for language in ("en", "es"):
            best = [max(h.dense for h in chat.retriever.search(q["question"], language))
                    for q in rows if q["language"] == language]
            if best:
                margins[language][kind] = pick(best)
    for language, row in margins.items():
        row["threshold"] = chat.min_similarity[language]
    return dict(margins)


def main() -> dict:
    args = parse_args()
    torch.set_num_threads(available_cpus())
    questions = json.loads(Path(args.questions).read_text(encoding="utf-8"))
    every = [q["question"] for q in questions["answerable"] + questions["refused"]]
    start = time.perf_counter()
    chat = Chat(args.knowledge, models_dir=args.models_dir)
    load_s = time.perf_counter() - start
    for question in every:  # warm-up
        chat.answer(question)
    retrieve_ms, answer_ms = [], []
    for _ in range(args.rounds):
        for question in every:
            start = time.perf_counter()
            chat.retrieve(question, k=3)
            retrieve_ms.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            chat.answer(question)
            answer_ms.append((time.perf_counter() - start) * 1000)
    refused = [chat.answer(q["question"]) for q in questions["refused"]]
    results = {
        "questions": {"answerable": len(questions["answerable"]), "refused": len(questions["refused"])},
        "passages": len(chat.passages),
        "rounds": args.rounds,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],  # other work on the machine (training) inflates the tail
        "load_s": load_s,
        "retrieve": percentiles(retrieve_ms),
        "answer": percentiles(answer_ms),
        "accuracy": accuracy(chat, questions["answerable"]),
        "refusal_rate": float(np.mean([a.refused for a in refused])),
        "refusal_reasons_match": float(np.mean([a.reason == q["why"] for a, q in zip(refused, questions["refused"])])),
        "false_refusal_rate": float(np.mean([chat.answer(q["question"]).refused for q in questions["answerable"]])),
        "relevance": relevance_margins(chat, questions),
    }
    if args.followups:
        results["followups"] = followup_accuracy(
            chat, json.loads(Path(args.followups).read_text(encoding="utf-8"))["conversations"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"chat on {results['machine']}: load {load_s:.1f} s")
    print(f"retrieve p50 {results['retrieve']['p50_ms']:.1f} ms, p95 {results['retrieve']['p95_ms']:.1f} ms; "
          f"answer p50 {results['answer']['p50_ms']:.1f} ms, p95 {results['answer']['p95_ms']:.1f} ms")
    for group, row in results["accuracy"].items():
        print(f"{group}: top-1 {row['top1']:.3f}, top-3 {row['top3']:.3f} (n={row['n']})")
    print(f"refusal rate {results['refusal_rate']:.3f} (reason as labelled {results['refusal_reasons_match']:.3f}), "
          f"false refusals {results['false_refusal_rate']:.3f}")
    print(json.dumps(results["relevance"]))
    for group, row in results.get("followups", {}).items():
        print(f"conversations, {group}: top-1 {row['in_context']:.3f} with the earlier questions, "
              f"{row['alone']:.3f} without (n={row['n']})")
    return results


if __name__ == "__main__":
    main()
