"""imagezoo: small image models trained, carded, served and batch-scored the Hugging Face way."""

from imagezoo import models as _models  # noqa: F401  (registers our architectures with timm)

__version__ = "0.1.0"
