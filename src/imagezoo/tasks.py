"""Tasks and training recipes as data: one registry entry per published model.

A task names its dataset, labels, card facts and recipes; the training script reads
everything from here, so adding a model is adding an entry, not another script branch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Recipe:
    """How to train one model: architecture, resolution, schedule and regularisation."""

    arch: str
    img_size: int
    epochs: int
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    warmup_epochs: int = 0
    schedule: str = "cosine"  # or "constant"
    augment: bool = True
    balance_classes: bool = True
    label_smoothing: float = 0.0
    drop_rate: float = 0.2
    pretrained: bool = True
    frozen: tuple[str, ...] = ()  # submodules kept at their pretrained weights (and BN statistics)

    def with_overrides(self, **overrides) -> "Recipe":
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


#: The original project's Keras procedure: Adam at a constant 1e-3, plain cross-entropy,
#: no augmentation, 15 epochs.
SEED_CNN_RECIPE = Recipe(
    arch="seed_cnn",
    img_size=128,
    epochs=15,
    batch_size=32,
    lr=1e-3,
    weight_decay=0.0,
    optimizer="adam",
    schedule="constant",
    augment=False,
    balance_classes=False,
    drop_rate=0.5,
    pretrained=False,
)

#: ``--arch`` aliases for architectures that bring their own recipe.
ARCH_RECIPES: dict[str, Recipe] = {"seed-cnn": SEED_CNN_RECIPE}


@dataclass(frozen=True)
class Task:
    """One published model: data, labels, recipes and the facts its card states.

    ``dataset`` is where training reads (a folder or Hub id for ``load_dataset``);
    ``dataset_repo_id`` is the Hub id the card links to once both are pushed.
    """

    name: str
    dataset: str
    dataset_repo_id: str
    label_names: tuple[str, ...]
    recipes: dict[str, Recipe]
    dataset_name: str
    dataset_license: str
    card_template: str
    card_facts: dict = field(default_factory=dict)
    model_config: dict = field(default_factory=dict)
    prepare_command: str = ""

    def recipe(self, name: str = "quick", arch: str | None = None) -> Recipe:
        """The named recipe, or the own recipe of an ``--arch`` alias such as ``seed-cnn``."""
        if arch in ARCH_RECIPES:
            return ARCH_RECIPES[arch]
        return self.recipes[name].with_overrides(arch=arch)


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {sorted(TASKS)}") from None


register_task(
    Task(
        name="ldc-live-dead",
        dataset="data/ldc-crops",
        dataset_repo_id="imagezoo/ldc-crops",
        label_names=("dead", "live"),
        recipes={
            # 2 CPU cores, about 8 minutes: small input (crops are ~40 px), whole network fine-tuned.
            "quick": Recipe(arch="tf_efficientnet_lite0", img_size=96, epochs=6, batch_size=64, lr=2e-3, warmup_epochs=1),
            # a GPU: bigger backbone and input, longer schedule.
            "full": Recipe(
                arch="tf_efficientnet_lite2", img_size=128, epochs=30, batch_size=128, lr=1e-3, warmup_epochs=2,
                label_smoothing=0.1,
            ),
        },
        dataset_name="LDC live/dead cell crops",
        dataset_license="other",
        card_template="classifier.md",
        card_facts=dict(
            title="Live/dead cell classifier (LDC)",
            summary="Classifies a single-cell microscopy crop as `dead` or `live`.",
            intended_use=(
                "Teaching and exploration: scoring cell crops from bright-field viability assays like those in "
                "the LDC set, and estimating per-slide viability (live / (live + dead)) from annotated boxes."
            ),
            limitations=[
                "Trained on one public set from one lab setting; other stains, magnifications or cell lines will "
                "shift its accuracy, so check it on a labelled sample of your own data first.",
                "It classifies crops around a cell; it does not find cells. Boxes come from annotations or a "
                "separate detector.",
                "Not a validated laboratory or clinical instrument.",
            ],
            data_source="Living and Dead Cell (LDC) data set, GitHub maxKudi/Cell-Dataset (no licence statement)",
            tags=["microscopy", "cell-viability", "biology"],
        ),
        # inference must crop cells as prepare_ldc.py did (its --context default)
        model_config={"crop_context": 0.5},
        prepare_command="python training/prepare_ldc.py --out data/ldc-crops",
    )
)
