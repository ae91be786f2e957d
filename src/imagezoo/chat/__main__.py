"""Ask the chat from a terminal: ``python -m imagezoo.chat "¿Qué es un meningioma?"``.

``--scan-label glioma --scan-prob 0.93`` simulates the analysis tab's result (an accepted MRI slice), so
questions such as "what does my result mean?" can be tried without the Space. ``--after "What is a
meningioma?"`` (repeatable) asks the question as a follow-up of earlier ones. ``--generate`` turns on the
optional generation mode (:mod:`imagezoo.chat.generate`).
"""

from __future__ import annotations

import argparse
import json

from imagezoo.chat.answer import LABEL_NAMES, Chat, default_chat
from imagezoo.chat.generate import Generator


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m imagezoo.chat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("question")
    parser.add_argument("--scan-label", choices=sorted(LABEL_NAMES), help="simulate a scan with this predicted class")
    parser.add_argument("--scan-prob", type=float, default=0.9, help="probability of the simulated class")
    parser.add_argument("--after", action="append", default=[], metavar="QUESTION",
                        help="an earlier question of the conversation (repeat for several, oldest first)")
    parser.add_argument("--models-dir", help="folder with brain-tumor-type/ and brain-mri-gate/ (default: "
                        "$IMAGEZOO_MODELS_DIR or models)")
    parser.add_argument("--generate", nargs="?", const="", metavar="MODEL",
                        help="rewrite the passages with an instruct model (Hub id, folder or .gguf; default SmolLM2-"
                        "135M-Instruct, offline from its PyPI wheel); kept only when grounded in them")
    parser.add_argument("--json", action="store_true", help="print the Answer as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    scan = None
    if args.scan_label:
        scan = {"gate": "mri", "accepted": True, "label": args.scan_label, "probability": args.scan_prob, "decisive": True}
    generator = None if args.generate is None else Generator.from_pretrained(args.generate or None)
    if args.models_dir is None and generator is None:
        chat = default_chat()  # one per process: in-process callers (the tests) build it once
    else:
        chat = Chat(models_dir=args.models_dir, generator=generator)
    answer = chat.answer(args.question, scan, args.after)
    if args.json:
        print(json.dumps(answer.to_dict(), ensure_ascii=False, indent=2))
        return
    print(answer.text)
    for source in answer.sources:
        print(f"- {source['title']} ({source['source']}: {source['url']})")


if __name__ == "__main__":
    main()
