"""Score every image under a directory with an imagezoo model into one Parquet file.

    python jobs/batch_predict.py --dir slides/ --model models/ldc-live-dead --out predictions.parquet
    python jobs/batch_predict.py --dir "../shared/data/ldc/Original Dataset" --boxes voc --out ldc.parquet
    python jobs/batch_predict.py --dir slides/ --out predictions.parquet --resume      # after a kill
    python jobs/batch_predict.py --dir slides/ --out predictions.parquet --engine ray  # Ray Data
    python jobs/batch_predict.py --dir nuclei/ --model models/nuclei-unet --masks-dir labels/ --out nuclei.parquet
    python jobs/batch_predict.py --dir slides/ --model models/ldc-viability --out v.parquet   # no box files needed
    python jobs/batch_predict.py --dir scans/ --model models/brain-tumor-type --gate models/brain-mri-gate --out s.parquet

Files are recognised by content; unreadable ones get a row with an ``error``. The output
schema is documented in the README ("Batch job") and in the Parquet field metadata.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from imagezoo.batch import BATCH_SIZE, BOX_MODES, ENGINES, ROWS_PER_PART, run_job
from imagezoo.tasks import default_model_id

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = default_model_id("ldc-live-dead", ROOT / "models")

logger = logging.getLogger("batch_predict")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True, help="directory to walk recursively")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model folder or hf-hub:ORG/NAME (default: %(default)s)")
    parser.add_argument("--out", default="predictions.parquet", help="output Parquet file")
    parser.add_argument("--boxes", choices=BOX_MODES, default=None, help="score each box of a Pascal-VOC XML beside an image")
    parser.add_argument("--resume", action="store_true", help="reuse rows of a previous (possibly killed) run")
    parser.add_argument("--engine", choices=ENGINES, default="local")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--num-workers", type=int, default=None,
                        help="worker processes, each decoding and scoring its own batches with a model replica "
                             "(default: one per core; 0: score in the main process); --engine ray: model actors "
                             "(default 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per replica (default: 1 with workers, all cores without; --engine ray: "
                             "half the cluster's CPUs over the actors)")
    parser.add_argument("--rows-per-part", type=int, default=ROWS_PER_PART, help="rows per Parquet row group")
    parser.add_argument("--masks-dir", default=None,
                        help="segmentation models and cell counters: write DIR/<input path>.png (uint16 instance labels), "
                             "DIR/<input path>.objects.csv and DIR/objects.csv (one row per object)")
    gate = parser.add_mutually_exclusive_group()
    gate.add_argument("--gate", default=None,
                      help="a gate model (folder or hf-hub:ORG/NAME, e.g. models/brain-mri-gate): every row gets its "
                           "verdict and score, and only accepted images get --model's label (default: the gate "
                           "--model's config names, beside it: the brain tumour model's brain-mri-gate)")
    gate.add_argument("--no-gate", dest="gate", action="store_false", default=None, help="score with --model alone")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM (timeout, Slurm, Kubernetes, `ray job stop`) ends the job as Ctrl-C does: the rows scored so far
    # are written to a part for --resume; its default ended the process with them in memory
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        summary = run_job(
            args.dir, args.model, args.out, boxes=args.boxes, resume=args.resume, engine=args.engine,
            batch_size=args.batch_size, num_workers=args.num_workers, rows_per_part=args.rows_per_part,
            threads=args.threads, progress=not args.no_progress, masks_dir=args.masks_dir, gate=args.gate,
        )
    except (OSError, ValueError, KeyError) as err:  # a missing folder or model, an unknown Hub id, no permission
        logger.error("%s", err)
        return 2
    except KeyboardInterrupt:
        logger.error("interrupted: the rows scored so far are kept; run again with --resume to score the rest")
        return 130
    logger.info("%s", summary.text())
    logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
