"""Server-side time per webcam frame for each runtime of the cats/dogs model, in one run.

    python benchmarks/bench_webcam.py            # or: make webcam-benchmark

What the Space does with one streamed frame: the browser sends a 320x240 JPEG data URL
(Gradio's webcam streaming uses ``canvas.toDataURL("image/jpeg")``); the server decodes it
(base64 + JPEG -> numpy, as ``gr.Image(type="numpy")`` does), resizes it to the model's input,
normalises, runs the network and turns the softmax into ``{label: probability}``. Each stage is
timed per frame over real test photos, for torch (eager, channels-last, ``inference_mode``),
ONNX fp32 and ONNX int8, interleaved frame by frame so that the machine's drift hits all alike.
Results go to ``benchmarks/results/webcam.json`` and are printed as a table.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from imagezoo.data import load_splits
from imagezoo.export import RUNTIME_FILES
from imagezoo.inference import ImageClassifier

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("decode", "resize", "forward", "post", "total")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "cats-dogs"))
    parser.add_argument("--dataset", default=str(ROOT / "data" / "cats-dogs"))
    parser.add_argument("--frames", type=int, default=200, help="frames per runtime")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "webcam.json"))
    return parser.parse_args()


def jpeg_frames(dataset: str, n: int) -> list[str]:
    """``n`` data URLs of 320x240 JPEG frames made from test photos (pets and negatives alike)."""
    test = load_splits(dataset)["test"]
    urls = []
    for i in range(n):
        buffer = io.BytesIO()
        test[i % len(test)]["image"].convert("RGB").resize((320, 240)).save(buffer, format="JPEG", quality=92)
        urls.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode())
    return urls


def frame_times(model: ImageClassifier, url: str) -> dict[str, float]:
    """Milliseconds of each stage for one frame."""
    marks = [time.perf_counter()]
    frame = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))
    marks.append(time.perf_counter())
    batch = model.normalize(model.uint8_transform(Image.fromarray(frame)).unsqueeze(0))
    marks.append(time.perf_counter())
    row = model.predict_tensor(batch)[0]  # the served network (backstop included) or its ONNX session
    marks.append(time.perf_counter())
    probs = dict(zip(model.label_names, map(float, row)))
    max(probs, key=probs.get)
    marks.append(time.perf_counter())
    steps = np.diff(marks) * 1000
    return {**dict(zip(STAGES, steps)), "total": float(steps.sum())}


def main() -> dict:
    args = parse_args()
    runtimes = ["torch", *(name for name, file in RUNTIME_FILES.items() if (Path(args.model) / file).is_file())]
    models = {name: ImageClassifier.from_pretrained(args.model, runtime=name) for name in runtimes}
    frames = jpeg_frames(args.dataset, args.frames)
    for model in models.values():  # warm-up
        for url in frames[:10]:
            frame_times(model, url)
    times = {name: [] for name in runtimes}
    for url in frames:
        for name, model in models.items():
            times[name].append(frame_times(model, url))
    results = {
        "model": args.model,
        "served_runtime": models["torch"].config.get("runtime", "torch"),
        "input_size": list(models["torch"].data_config["input_size"]),
        "frames": args.frames,
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
        "runtimes": {
            name: {stage: {"p50_ms": float(np.percentile([t[stage] for t in rows], 50)),
                           "p95_ms": float(np.percentile([t[stage] for t in rows], 95))} for stage in STAGES}
            for name, rows in times.items()
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"per-frame server time, 320x240 JPEG -> {results['input_size'][1]} px, {results['machine']}")
    print("| runtime | " + " | ".join(f"{s} p50 / p95 ms" for s in STAGES) + " |")
    for name, row in results["runtimes"].items():
        print(f"| {name} | " + " | ".join(f"{row[s]['p50_ms']:.1f} / {row[s]['p95_ms']:.1f}" for s in STAGES) + " |")
    return results


if __name__ == "__main__":
    main()
