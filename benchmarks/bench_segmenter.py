"""Nuclei U-Net inference speed and memory on real DSB2018 images, measured in one run.

    python benchmarks/bench_segmenter.py            # or: make nuclei-benchmark

1. 256x256 images (the most common DSB size): images/s of ``InstanceSegmenter.segment``
   (probabilities + watershed) in one process on every core, with the time split between the
   network and the post-processing, and of the batch job end to end (``run_job``: hash, decode,
   segment, RLE, Parquet; one single-threaded replica per core);
2. a 1388x1040 image: seconds per image and peak RSS of a fresh process segmenting it, tiled
   (the model's ``tile_size``, Gaussian-blended overlapping tiles) and in one whole-image forward.

Interleaved rounds, medians reported (this shared 2-core machine swings by 30% between runs).
Results go to ``benchmarks/results/segmenter.json`` and are printed as a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_batch_predict import peak_rss_mb
from PIL import Image

from imagezoo.batch import available_cpus, run_job
from imagezoo.images import load_image
from imagezoo.predictors import load_predictor

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "nuclei-unet"))
    parser.add_argument("--dsb-dir", default=str(ROOT.parent / "shared" / "data" / "dsb2018" / "stage1_train"))
    parser.add_argument("--n-small", type=int, default=64, help="256x256 images for the throughput runs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "segmenter.json"))
    parser.add_argument("--segment-one", metavar="PATH", help="child mode: segment PATH once, print seconds")
    parser.add_argument("--tile-size", type=int, default=None, help="child mode: override the model's tile size")
    return parser.parse_args()


def images_of_size(dsb_dir: Path, size: tuple[int, int]) -> list[Path]:
    """Every DSB image whose (width, height) is ``size``."""
    found = []
    for path in sorted(dsb_dir.glob("*/images/*.png")):
        with Image.open(path) as image:
            if image.size == size:
                found.append(path)
    return found


def segment_seconds(model_id: str, path: Path, tile_size: int | None) -> float:
    """Seconds to segment one image in this process (after loading the model and a warm-up call)."""
    segmenter = load_predictor(model_id)
    if tile_size is not None:
        segmenter.settings = dataclasses.replace(segmenter.settings, tile_size=tile_size)
    image = load_image(path)
    segmenter.segment(image)
    start = time.perf_counter()
    segmenter.segment(image)
    return time.perf_counter() - start


def small_image_rates(model_id: str, paths: list[Path]) -> dict:
    """Images/s of ``segment`` on 256x256 images, and the share of time in the network."""
    segmenter = load_predictor(model_id)
    images = [load_image(p) for p in paths]
    segmenter.segment(images[0])
    network = post = 0.0
    for image in images:
        start = time.perf_counter()
        probabilities = segmenter.probabilities(image)
        middle = time.perf_counter()
        segmenter.instances(probabilities)
        network, post = network + middle - start, post + time.perf_counter() - middle
    return {"segment_images_per_s": len(images) / (network + post),
            "network_ms": 1000 * network / len(images), "postprocess_ms": 1000 * post / len(images)}


def main() -> None:
    args = parse_args()
    if args.segment_one:
        print(segment_seconds(args.model, Path(args.segment_one), args.tile_size))
        return
    dsb = Path(args.dsb_dir)
    small = images_of_size(dsb, (256, 256))[: args.n_small]
    large = images_of_size(dsb, (1388, 1040))[0]
    settings = load_predictor(args.model).settings
    cores = available_cpus()
    results: dict = {
        "machine": f"{platform.machine()}, {cores} CPU cores, torch {torch.__version__}",
        "model": args.model,
        "settings": dataclasses.asdict(settings),
        "small_images": f"{len(small)} real DSB2018 images of 256x256",
        "large_image": large.name,
    }
    child = [sys.executable, __file__, "--model", args.model, "--segment-one", str(large)]
    whole = max(1040, 1388) + settings.stride
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "small")
        folder.mkdir()
        for path in small:
            os.symlink(path, folder / path.name)
        for _ in range(args.rounds):
            torch.set_num_threads(cores)
            rates = small_image_rates(args.model, small)
            job = run_job(folder, args.model, Path(tmp, "out.parquet"), progress=False)
            tiled = float(subprocess.run(child, check=True, capture_output=True, text=True).stdout.split()[-1])
            one = float(subprocess.run([*child, "--tile-size", str(whole)], check=True, capture_output=True,
                                       text=True).stdout.split()[-1])
            rounds.append({**rates, "batch_job_images_per_s": job.images_per_second,
                           "large_tiled_s": tiled, "large_whole_s": one})
    results["rounds"] = rounds
    for key in rounds[0]:
        results[key] = statistics.median(r[key] for r in rounds)
    results["large_tiled_peak_rss_mb"] = peak_rss_mb(child)
    results["large_whole_peak_rss_mb"] = peak_rss_mb([*child, "--tile-size", str(whole)])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print("| measure | value |\n|---|---|")
    for name, value in results.items():
        if name not in ("rounds", "settings"):
            print(f"| {name} | {value:.3f} |" if isinstance(value, float) else f"| {name} | {value} |")


if __name__ == "__main__":
    main()
