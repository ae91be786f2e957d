"""Folders in Hugging Face Hub layout, and the one way we upload them.

Every artefact (dataset, model, Space) is first written as a local folder that is
byte-for-byte what the Hub repo will hold; pushing is then a single ``upload_folder``,
and everything downstream loads the local folder and the Hub id through the same code.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
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
    folder: str | Path, repo_id: str, repo_type: str = "model", private: bool = False,
    delete_patterns: list[str] | None = None, **create_kwargs,
) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` to it in one commit; returns the commit URL.
    Remote files matching ``delete_patterns`` that the folder no longer holds are deleted in that commit.
    A ``private`` upload to a repo that already exists as public is refused (``create_repo`` leaves an
    existing repo's visibility as it is).

    The token comes from ``HF_TOKEN`` or ``huggingface-cli login``'s cache, never from
    arguments, so it is never echoed in logs or shell history.
    """
    api = HfApi()
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, **create_kwargs)
    if private and not api.repo_info(repo_id, repo_type=repo_type).private:
        raise PermissionError(f"{repo_id} is a public {repo_type} repo: refusing to upload what must stay private "
                              "(make it private on the Hub first)")
    commit = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, ignore_patterns=["__pycache__/*", "*.pyc"],
        delete_patterns=delete_patterns,
    )
    logger.info("pushed %s to %s (%s)", folder, repo_id, commit.commit_url)
    return commit.commit_url


def push_model_folder(folder: str | Path, repo_id: str) -> str:
    """Upload a trained model folder so that the model repo holds exactly its files: what an earlier run pushed
    and this one no longer writes (an ONNX export, a backstop, a counter's ``classifier/``) is deleted in the
    same commit, or ``hf-hub:`` downloads would keep fetching it (the Hub keeps ``.gitattributes``)."""
    return push_folder(folder, repo_id, delete_patterns=["*"])


#: what a Space folder never ships
SPACE_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def save_space_folder(space_dir: str | Path, folder: str | Path) -> Path:
    """The Space as its repo holds it: ``space_dir`` (app, requirements, README) plus the ``imagezoo``
    package the app imports, under ``imagezoo/``."""
    import imagezoo

    folder = Path(folder)
    shutil.copytree(space_dir, folder, ignore=SPACE_IGNORE, dirs_exist_ok=True)
    shutil.copytree(Path(imagezoo.__file__).parent, folder / "imagezoo", ignore=SPACE_IGNORE, dirs_exist_ok=True)
    return folder


def push_space(space_dir: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload a Gradio Space with the ``imagezoo`` package in one commit, so the Space never rebuilds
    with a new app beside an old package; modules since removed from the package are deleted."""
    with tempfile.TemporaryDirectory() as staging:
        folder = save_space_folder(space_dir, staging)
        return push_folder(folder, repo_id, repo_type="space", private=private, delete_patterns=["imagezoo/*"],
                           space_sdk="gradio")
