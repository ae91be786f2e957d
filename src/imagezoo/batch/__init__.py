"""Score a whole directory into one Parquet file: batched, resumable, constant memory, any model.

* :mod:`~imagezoo.batch.discovery` - which files under ``--dir`` are inputs;
* :mod:`~imagezoo.batch.items` - per file, in a worker: hash, decode (any mode), the model's
  preparer; then the predictor's forward, rows and output files for a batch of them;
* :mod:`~imagezoo.batch.output` - the schema, Parquet parts written as the job runs, the atomic
  merge and what ``--resume`` may reuse;
* engines in :data:`ENGINES` (``local``: DataLoader workers with a model replica each;
  ``ray``: Ray Data), all ``run(job) -> reused keys``; :func:`run_job` ties them together.

The model is any :class:`~imagezoo.predictors.Predictor` (classifier, segmenter...), picked
from its folder's config, so nothing here branches on the kind of model.
"""

from imagezoo.batch.discovery import discover
from imagezoo.batch.items import Preprocessor, score_items
from imagezoo.batch.job import ENGINES, run_job
from imagezoo.batch.local_engine import available_cpus
from imagezoo.batch.output import ROWS_PER_PART, output_schema
from imagezoo.batch.run import BATCH_SIZE, JobRun, JobSummary
from imagezoo.inference import BOX_MODES

__all__ = [
    "BATCH_SIZE", "BOX_MODES", "ENGINES", "ROWS_PER_PART", "JobRun", "JobSummary", "Preprocessor", "available_cpus",
    "discover", "output_schema", "run_job", "score_items",
]
