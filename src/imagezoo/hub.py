"""Folders in Hugging Face Hub layout, and the one way we upload them.

Every artefact (dataset, model, Space) is first written as a local folder that is
byte-for-byte what the Hub repo will hold; pushing is then a single ``upload_folder``,
and everything downstream loads the local folder and the Hub id through the same code.
"""

from __future__ import annotations

import logging
from pathlib import Path

from datasets import DatasetDict
from huggingface_hub import DatasetCard, HfApi, ModelCard
from timm.models import save_for_hf
from torch import nn

logger = logging.getLogger(__name__)


def data_files_config(dataset: DatasetDict) -> list[dict]:
    """The card's ``configs:`` entry for the non-empty splits (an empty split cannot be loaded)."""
    files = [{"split": split, "path": f"data/{split}-*.parquet"} for split, part in dataset.items() if len(part)]
    return [{"config_name": "default", "data_files": files}]


def save_dataset_folder(dataset: DatasetDict, folder: str | Path, card: DatasetCard) -> Path:
    """Write ``dataset`` as Parquet shards plus its card, loadable by ``load_dataset(folder)``.

    Empty splits are left out, as in :func:`data_files_config`.
    """
    folder = Path(folder)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for old in (folder / "data").glob("*.parquet"):
        old.unlink()
    for split, part in dataset.items():
        if len(part):
            part.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    card.save(folder / "README.md")
    return folder


def save_prepared_dataset(
    dataset: DatasetDict,
    folder: str | Path,
    template: str,
    card_data: dict,
    push_to_hub: str | None = None,
    private: bool = False,
    **context,
) -> Path:
    """What every prep script ends with: the card from ``model_cards/<template>`` (``card_data`` as its
    YAML, the ``configs`` entry added, ``pretty_name`` shared with the template), the Parquet folder, and
    the upload when ``push_to_hub`` names a dataset repo."""
    from imagezoo.cards import dataset_card

    card_data = {**card_data, "configs": data_files_config(dataset)}
    card = dataset_card(template, card_data, pretty_name=card_data["pretty_name"], **context)
    folder = save_dataset_folder(dataset, folder, card)
    logger.info("wrote %s", folder)
    if push_to_hub:
        push_folder(folder, push_to_hub, repo_type="dataset", private=private)
    return folder


def save_model_folder(
    model: nn.Module,
    folder: str | Path,
    label_names: list[str],
    data_config: dict,
    card: ModelCard | None = None,
    extra_config: dict | None = None,
) -> Path:
    """Write timm's Hub format: ``config.json`` (architecture, labels, preprocessing) and ``model.safetensors``.

    ``extra_config`` adds task facts to config.json (e.g. ``crop_context`` for cell crops).
    The result loads with ``timm.create_model("local-dir:<folder>", pretrained=True)``
    and, once pushed, ``timm.create_model("hf-hub:ORG/NAME", pretrained=True)``.
    """
    folder = Path(folder)
    save_for_hf(
        model,
        str(folder),
        model_config={"label_names": list(label_names), **(extra_config or {})},
        safe_serialization=True,
        data_config=data_config,
    )
    if card is not None:
        card.save(folder / "README.md")
    return folder


def push_folder(
    folder: str | Path, repo_id: str, repo_type: str = "model", private: bool = False, **create_kwargs
) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` to it; returns the commit URL.

    The token comes from ``HF_TOKEN`` or ``huggingface-cli login``'s cache, never from
    arguments, so it is never echoed in logs or shell history.
    """
    api = HfApi()
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, **create_kwargs)
    commit = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, ignore_patterns=["__pycache__/*", "*.pyc"]
    )
    logger.info("pushed %s to %s (%s)", folder, repo_id, commit.commit_url)
    return commit.commit_url


def push_space(space_dir: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload a Gradio Space folder together with the ``imagezoo`` package its app imports."""
    import imagezoo

    push_folder(space_dir, repo_id, repo_type="space", private=private, space_sdk="gradio")
    commit = HfApi().upload_folder(
        folder_path=str(Path(imagezoo.__file__).parent),
        path_in_repo="imagezoo",
        repo_id=repo_id,
        repo_type="space",
        ignore_patterns=["__pycache__/*", "*.pyc"],
    )
    return commit.commit_url
