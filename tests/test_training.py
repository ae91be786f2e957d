"""A short real fine-tuning run: beats chance, exports to timm's Hub format, reloads identically."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from datasets import Dataset, DatasetDict
from PIL import Image
from safetensors.torch import load_file

from imagezoo.data import check_splits, load_splits
from imagezoo.evaluation import classification_metrics
from imagezoo.inference import ImageClassifier, eval_transform
from imagezoo.scripts import output_folder
from imagezoo.tasks import SEED_CNN_RECIPE, Recipe, get_task
from imagezoo.training import (
    ImageLabelDataset,
    build_model,
    class_weights,
    cosine_schedule,
    fit,
    make_optimizer,
    make_train_loader,
    predict_probs,
)

pytestmark = pytest.mark.slow


def test_short_run_beats_chance_on_held_out_crops(trained_model):
    results = json.loads((trained_model / "eval_results.json").read_text())
    metrics = results["metrics"]
    assert metrics["n"] > 500
    assert metrics["balanced_accuracy"] > 0.75  # chance is 0.5
    assert metrics["roc_auc"] > 0.85
    for key in ("accuracy", "ece", "log_loss", "confusion_matrix"):
        assert key in metrics
    assert set(metrics["per_class"]) == {"dead", "live"}
    log = [json.loads(line) for line in (trained_model / "train_log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [1, 2]
    assert all("val_balanced_accuracy" in row and "train_loss" in row for row in log)


def test_export_is_timm_hub_format_with_a_real_card(trained_model):
    config = json.loads((trained_model / "config.json").read_text())
    assert config["architecture"] == "tf_efficientnet_lite0"
    assert config["num_classes"] == 2 and config["label_names"] == ["dead", "live"]
    size = get_task("ldc-live-dead").recipe().img_size
    assert config["pretrained_cfg"]["input_size"] == [3, size, size]
    assert config["crop_context"] == 0.5
    assert not list(trained_model.glob("*.bin")) and not list(trained_model.glob("*.pth"))
    card = (trained_model / "README.md").read_text()
    metrics = json.loads((trained_model / "eval_results.json").read_text())["metrics"]
    assert "model-index:" in card and "library_name: timm" in card and "license: apache-2.0" in card
    assert f"{metrics['balanced_accuracy']:.4f}" in card
    assert "python training/train_classifier.py" in card and "--max-train-samples 1200" in card
    assert (trained_model / "confusion_matrix.png").stat().st_size > 1000


def test_export_round_trip_gives_identical_outputs(tmp_path, ldc_crops):
    from imagezoo.hub import save_model_folder
    from imagezoo.training import eval_data_config

    task = get_task("ldc-live-dead")
    torch.manual_seed(0)
    model = build_model(task.recipe(), num_classes=2).eval()
    data_config = eval_data_config(model, 96)
    folder = save_model_folder(model, tmp_path / "exported", list(task.label_names), data_config)
    crops = load_splits(str(ldc_crops))["test"].select(range(16))["image"]
    ours = ImageClassifier.from_pretrained(str(folder))
    batch = torch.stack([ours.preprocess(c) for c in crops])
    with torch.inference_mode():
        before = model(batch).softmax(-1).numpy()
        reloaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        assert np.array_equal(reloaded(batch).softmax(-1).numpy(), before)  # bit for bit
    # our loader runs channels-last (faster on CPU): same numbers up to float summation order
    assert np.allclose(ours.predict_tensor(batch), before, atol=1e-4)
    assert ours.label_names == ("dead", "live") and len(ours.revision) == 12


def test_trained_folder_reloads_with_its_preprocessing(trained_model, ldc_crops):
    crops = load_splits(str(ldc_crops))["test"].select(range(16))["image"]
    ours = ImageClassifier.from_pretrained(str(trained_model))
    batch = torch.stack([ours.preprocess(c) for c in crops])
    with torch.inference_mode():
        via_timm = timm.create_model(f"local-dir:{trained_model}", pretrained=True).eval()(batch).softmax(-1).numpy()
    assert np.allclose(ours.predict_tensor(batch), via_timm, atol=1e-4)
    assert ours.data_config["input_size"] == (3, 96, 96) and ours.data_config["crop_mode"] == "squash"
    rebuilt = timm.create_model(f"local-dir:{trained_model}", pretrained=False)
    rebuilt.load_state_dict(load_file(trained_model / "model.safetensors"))
    with torch.inference_mode():
        assert np.array_equal(rebuilt.eval()(batch).softmax(-1).numpy(), via_timm)


def test_folder_with_only_pickled_weights_is_refused(trained_model, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(trained_model / "config.json", folder / "config.json")
    torch.save(load_file(trained_model / "model.safetensors"), folder / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="only safetensors"):
        ImageClassifier.from_pretrained(str(folder))


def test_seed_cnn_is_the_keras_architecture():
    model = build_model(SEED_CNN_RECIPE, num_classes=2)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128]
    assert model.fc1.in_features == 14 * 14 * 128 and model.fc1.out_features == 128
    # Keras summary of the seed model: 896 + 18496 + 73856 + 3211392 + 129 (one sigmoid unit);
    # our two-logit head has one extra 128+1 row.
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 896 + 18496 + 73856 + 3211392 + 2 * 129
    assert model(torch.zeros(2, 3, 128, 128)).shape == (2, 2)
    assert model.pretrained_cfg["mean"] == (0.0, 0.0, 0.0) and model.pretrained_cfg["std"] == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="128x128 px inputs only, not 160 px"):  # its dense layer is sized for 128
        build_model(SEED_CNN_RECIPE.with_overrides(img_size=160), num_classes=2)


def test_a_model_without_imagenet_weights_is_refused_before_training_an_open_set_task(tmp_path):
    import train_classifier

    with pytest.raises(SystemExit, match="ImageNet features: seed_cnn has no pretrained weights"):
        train_classifier.main(["--task", "cats-dogs", "--arch", "seed-cnn", "--output-dir", str(tmp_path / "out")])


@pytest.mark.parametrize("argument", ["--epochs", "--batch-size", "--max-train-samples"])
def test_counts_below_one_are_refused_on_the_command_line(argument, capsys):
    import train_classifier
    import train_segmenter

    for script in (train_classifier, train_segmenter):
        with pytest.raises(SystemExit):
            script.parse_args([argument, "0"])
        assert "must be at least 1, not 0" in capsys.readouterr().err


def test_a_run_on_another_dataset_neither_replaces_the_task_model_nor_the_one_it_starts_from():
    import train_segmenter

    task = get_task("nuclei-unet")
    assert output_folder(train_segmenter.parse_args([]), task) == Path("models/nuclei-unet")
    fine_tune = train_segmenter.parse_args(["--init-from", "models/nuclei-unet", "--dataset", "my-nuclei"])
    on_it = task.on_dataset(fine_tune.dataset)  # as the training scripts re-point their task
    assert output_folder(fine_tune, on_it) == Path("models/nuclei-unet-my-nuclei")  # the README's command
    onto_itself = ["--init-from", "local-dir:models/nuclei-unet", "--output-dir", "models/nuclei-unet/"]
    with pytest.raises(SystemExit, match="would be overwritten"):
        output_folder(train_segmenter.parse_args(onto_itself), task)


def test_no_epoch_to_select_is_an_error_before_training():
    recipe = get_task("ldc-live-dead").recipe("quick")
    crops = ([Image.new("RGB", (32, 32))] * 4, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="validation set is empty"):
        fit(recipe, crops, ([], []), ("dead", "live"))
    with pytest.raises(ValueError, match="epochs must be at least 1, not 0"):
        fit(recipe.with_overrides(epochs=0), crops, crops, ("dead", "live"))
    splits = DatasetDict({"train": Dataset.from_dict({"x": [1]}), "validation": Dataset.from_dict({"x": []}),
                          "test": Dataset.from_dict({"x": [2]})})
    with pytest.raises(ValueError, match=r"data/x: no rows in split\(s\) \['validation'\]"):
        check_splits(splits, "data/x")


@pytest.mark.parametrize("class_balance, rare_share", [("sampler", 0.5), ("loss", 0.1)])
def test_class_balanced_sampler_draws_the_rare_class_as_often_as_the_common_one(class_balance, rare_share):
    recipe = get_task("ldc-live-dead").recipe("quick").with_overrides(class_balance=class_balance, batch_size=50)
    labels = [0] * 100 + [1] * 900
    images = [Image.new("RGB", (8, 8))] * len(labels)
    data_config = dict(input_size=(3, 16, 16), interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3)
    weight = class_weights(labels, 2)
    assert weight.tolist() == pytest.approx([5.0, 1000 / 1800])
    loader = make_train_loader(recipe, (images, labels), data_config, weight, torch.Generator().manual_seed(0))
    drawn = torch.cat([targets for _, targets in loader])
    assert len(drawn) == len(labels)  # an epoch is still one pass's worth of steps
    assert (drawn == 0).float().mean().item() == pytest.approx(rare_share, abs=0.04)


def test_an_unknown_class_balance_is_refused_listing_the_valid_ones():
    with pytest.raises(ValueError, match=r"'oversample' is not one of \('loss', 'sampler'\) or None"):
        Recipe(arch="tf_efficientnet_lite0", img_size=96, epochs=1, class_balance="oversample")


def test_layer_decay_slows_the_blocks_far_from_the_head():
    recipe = get_task("ldc-live-dead").recipe("quick").with_overrides(layer_decay=0.5)
    model = timm.create_model(recipe.arch, pretrained=False, num_classes=2)
    optimizer = make_optimizer(model, recipe)
    scale_of = {id(p): group["lr_scale"] for group in optimizer.param_groups for p in group["params"]}
    assert scale_of[id(model.classifier.weight)] == 1.0
    assert scale_of[id(model.conv_stem.weight)] == min(scale_of.values()) < 0.5**5
    assert scale_of[id(model.blocks[0][0].conv_dw.weight)] < scale_of[id(model.blocks[-1][0].conv_pw.weight)]
    scheduler = cosine_schedule(optimizer, recipe, steps_per_epoch=10)
    scheduler.step_update(10)
    peak = max(group["lr"] for group in optimizer.param_groups)
    assert all(group["lr"] == pytest.approx(peak * group["lr_scale"]) for group in optimizer.param_groups)
    assert all("lr_scale" not in group for group in make_optimizer(model, get_task("ldc-live-dead").recipe()).param_groups)


def _bright_and_dark(n: int, seed: int) -> tuple[list[Image.Image], list[int]]:
    rng = np.random.default_rng(seed)
    labels = [i % 2 for i in range(n)]
    images = [Image.fromarray(rng.integers(0, 128, (32, 32, 3), dtype=np.uint8) + 127 * label) for label in labels]
    return images, labels


def _fit_tiny(ema_decay: float | None):
    recipe = Recipe(arch="tf_efficientnet_lite0", img_size=32, epochs=3, batch_size=16, lr=3e-3, pretrained=False,
                    ema_decay=ema_decay)
    validation = _bright_and_dark(32, seed=1)
    return fit(recipe, _bright_and_dark(64, seed=0), validation, ["dark", "bright"], seed=0), validation


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_the_weights_validated_are_the_weights_exported(ema_decay):
    result, validation = _fit_tiny(ema_decay)
    loader = torch.utils.data.DataLoader(ImageLabelDataset(*validation, eval_transform(result.data_config)), batch_size=32)
    probs, labels = predict_probs(result.model, loader)
    metrics = classification_metrics(labels, probs, ["dark", "bright"])
    best = result.history[result.best_epoch - 1]
    assert metrics["balanced_accuracy"] == pytest.approx(best["val_balanced_accuracy"])
    assert metrics["log_loss"] == pytest.approx(best["val_loss"], rel=1e-5)


def test_a_moving_average_with_decay_0_is_the_model_itself():
    plain, _ = _fit_tiny(None)
    averaged, _ = _fit_tiny(0.0)
    assert averaged.history == plain.history
    assert all(torch.equal(a, b) for a, b in zip(averaged.model.state_dict().values(), plain.model.state_dict().values()))
    smoothed, _ = _fit_tiny(0.9)
    assert smoothed.history != plain.history


def test_arch_alias_selects_the_seed_recipe():
    task = get_task("ldc-live-dead")
    assert task.recipe("quick", "seed-cnn") == SEED_CNN_RECIPE
    assert task.recipe("quick").arch == "tf_efficientnet_lite0"
    assert task.recipe("quick", "tf_efficientnet_lite1").arch == "tf_efficientnet_lite1"


def test_unknown_recipe_error_lists_the_valid_ones():
    with pytest.raises(ValueError, match="no recipe 'medium'; valid: quick, long, full"):
        get_task("nuclei-unet").recipe("medium")


def test_seed_cnn_trains_exports_and_reloads_through_timm(tmp_path, ldc_crops, trained_model):
    import train_classifier

    out = tmp_path / "ldc-live-dead-seed-cnn"
    train_classifier.main(["--dataset", str(ldc_crops), "--arch", "seed-cnn", "--epochs", "1",
                           "--max-train-samples", "200", "--output-dir", str(out)])
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "seed_cnn" and config["pretrained_cfg"]["input_size"] == [3, 128, 128]
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    reference = load_file(out / "model.safetensors")
    assert torch.equal(model.fc1.weight, reference["fc1.weight"])
    card = (out / "README.md").read_text()
    assert "import imagezoo" in card and "constant schedule" in card and "no augmentation" in card


def test_evaluate_script_reproduces_the_card_numbers(trained_model, ldc_crops, tmp_path):
    import evaluate_classifier

    report = evaluate_classifier.main(["--model", str(trained_model), "--compare", str(trained_model),
                                       "--dataset", str(ldc_crops), "--out", str(tmp_path / "r.json")])
    saved = json.loads((trained_model / "eval_results.json").read_text())["metrics"]
    assert report["metrics"][str(trained_model)]["balanced_accuracy"] == pytest.approx(saved["balanced_accuracy"], abs=1e-3)
    assert report["comparisons"][str(trained_model)]["difference"] == 0
    assert json.loads((tmp_path / "r.json").read_text())["split"] == "test"
