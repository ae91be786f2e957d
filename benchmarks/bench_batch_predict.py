"""Batch job speed and memory, as ratios measured in one run on the same images.

    python benchmarks/bench_batch_predict.py            # or: make benchmark

1. bare forward: the model alone on one preprocessed batch, in a loop, measured two ways: in one
   process on every core (what ``model(batch)`` in a loop gives), and as one single-threaded
   process per core running side by side (the job's own layout, so its true ceiling);
2. end to end: ``run_job`` over a folder of real LDC slides (hash, decode, resize, forward, Parquet);
3. naive: the loop one writes first: ``timm.create_model`` + ``Image.open`` + the model's transform,
   one image at a time under ``torch.no_grad``;
4. peak memory (RSS of the job and its workers) of the CLI on 1k and on 10k images.

Throughput is measured in interleaved rounds (bare, end to end, naive; default 3) and medians are
reported: this shared 2-core machine swings by 30% between runs. Results go to
``benchmarks/results/batch_predict.json`` (every round included) and are printed as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

from imagezoo.batch import available_cpus, run_job
from imagezoo.inference import ImageClassifier

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "ldc-live-dead"))
    parser.add_argument("--ldc-dir", default=str(ROOT.parent / "shared" / "data" / "ldc" / "Original Dataset"))
    parser.add_argument("--n-throughput", type=int, default=4000, help="images for the end-to-end throughput run")
    parser.add_argument("--n-naive", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds (medians reported)")
    parser.add_argument("--memory-sizes", type=int, nargs=2, default=[1000, 10000])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "batch_predict.json"))
    parser.add_argument("--naive-only", action="store_true", help="print the naive loop's images/s and exit")
    parser.add_argument("--bare-only", type=int, metavar="THREADS", help="print bare forward images/s with THREADS threads and exit")
    return parser.parse_args()


def make_folder(sources: list[Path], n: int, folder: Path) -> Path:
    """``n`` distinct file names cycling over the real slides (symlinks, no copies)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        source = sources[i % len(sources)]
        os.symlink(source, folder / f"{i:06d}{source.suffix}")
    return folder


def bare_forward(classifier: ImageClassifier, sources: list[Path], batch_size: int, seconds: float = 10.0) -> float:
    """Images/s of ``predict_tensor`` on one preprocessed batch, in this process, after one warm-up call."""
    batch = torch.stack([classifier.preprocess(p) for p in sources[:batch_size]])
    classifier.predict_tensor(batch)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        classifier.predict_tensor(batch)
        count += len(batch)
    return count / (time.perf_counter() - start)


def bare_forward_replicas(command: list[str], replicas: int) -> float:
    """Summed images/s of ``replicas`` single-threaded bare-forward processes running side by side."""
    processes = [subprocess.Popen([*command, "--bare-only", "1"], stdout=subprocess.PIPE, text=True) for _ in range(replicas)]
    return sum(float(p.communicate()[0].strip().splitlines()[-1]) for p in processes)


def naive_loop(model_id: str, files: list[Path]) -> float:
    """What one writes first: timm's own loader, then one image at a time under no_grad.

    Runs in a child process, like a user's script.
    """
    model = timm.create_model(f"local-dir:{model_id}", pretrained=True).eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    start = time.perf_counter()
    with torch.no_grad():
        for path in files:
            model(transform(Image.open(path).convert("RGB")).unsqueeze(0)).softmax(-1)
    return len(files) / (time.perf_counter() - start)


def peak_rss_mb(command: list[str]) -> float:
    """Peak summed RSS of a command and all its children, sampled every 20 ms."""
    process = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while process.poll() is None:
        try:
            tree = [process, *process.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.02)
    if process.returncode != 0:
        raise RuntimeError(f"{command} exited with {process.returncode}")
    return peak / 2**20


def main() -> None:
    args = parse_args()
    sources = sorted(Path(args.ldc_dir).glob("*.png"))
    if args.naive_only:
        print(naive_loop(args.model, sources[: args.n_naive]))
        return
    classifier = ImageClassifier.from_pretrained(args.model)
    if args.bare_only:
        torch.set_num_threads(args.bare_only)
        print(bare_forward(classifier, sources, args.batch_size))
        return
    cores = available_cpus()
    results: dict = {
        "machine": f"{platform.machine()}, {cores} CPU cores, torch {torch.__version__}",
        "model": args.model,
        "input_size": list(classifier.data_config["input_size"]),
        "batch_size": args.batch_size,
        "images": "real LDC slides (PNG, ~220x220, all modes), cycled to reach each count",
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = make_folder(sources, args.n_throughput, tmp / "throughput")
        child = [sys.executable, __file__, "--model", args.model, "--ldc-dir", args.ldc_dir,
                 "--batch-size", str(args.batch_size)]
        rounds = []
        for _ in range(args.rounds):  # interleaved, so each ratio compares measurements taken side by side
            torch.set_num_threads(cores)
            one_process = bare_forward(classifier, sources, args.batch_size)
            replicas = bare_forward_replicas(child, cores)
            summary = run_job(folder, args.model, tmp / "throughput.parquet", batch_size=args.batch_size, progress=False)
            naive = subprocess.run([*child, "--naive-only", "--n-naive", str(args.n_naive)],
                                   check=True, capture_output=True, text=True)
            rounds.append({"bare_forward_one_process": one_process, "bare_forward_replicas": replicas,
                           "end_to_end": summary.images_per_second,
                           "naive": float(naive.stdout.strip().splitlines()[-1])})
        results["rounds"] = rounds
        for key in rounds[0]:
            results[f"{key}_images_per_s"] = statistics.median(r[key] for r in rounds)
        for key in ("bare_forward_one_process", "bare_forward_replicas", "naive"):
            results[f"ratio_end_to_end_vs_{key}"] = statistics.median(r["end_to_end"] / r[key] for r in rounds)
        for n in args.memory_sizes:
            folder = make_folder(sources, n, tmp / f"memory-{n}")
            command = [sys.executable, str(ROOT / "jobs" / "batch_predict.py"), "--dir", str(folder),
                       "--model", args.model, "--out", str(tmp / f"memory-{n}.parquet"), "--no-progress",
                       "--batch-size", str(args.batch_size)]
            results[f"peak_rss_mb_{n}"] = peak_rss_mb(command)
    small, large = args.memory_sizes
    results["peak_rss_growth_mb"] = results[f"peak_rss_mb_{large}"] - results[f"peak_rss_mb_{small}"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print("| measure | value |\n|---|---|")
    for name, value in results.items():
        if name == "rounds":
            continue
        print(f"| {name} | {value:.2f} |" if isinstance(value, float) else f"| {name} | {value} |")


if __name__ == "__main__":
    main()
