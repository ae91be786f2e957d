"""Downloads by Hub id, for real: our model folders served as git repos by olah, a Hub-compatible server.

Each client runs in a fresh process with ``HF_ENDPOINT`` pointing at the server (huggingface_hub
reads it at import), so ``hf-hub:`` ids, ``timm.create_model`` and ``smp.from_pretrained`` take the
same HTTP path they take against huggingface.co.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import ROOT, free_port

pytestmark = pytest.mark.slow




def publish(mirrors, folder, repo_id: str) -> None:
    """A model folder committed as the git repo olah serves for ``repo_id``."""
    repo = mirrors / "models" / repo_id
    shutil.copytree(folder, repo)
    git = ["git", "-C", str(repo), "-c", "user.name=imagezoo", "-c", "user.email=ci@imagezoo.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "model"], check=True)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, nuclei_model, trained_model, cell_counter_model, pets_model, brain_models):
    """olah serving imagezoo/nuclei-unet, imagezoo/ldc-live-dead, imagezoo/ldc-viability, imagezoo/cats-dogs,
    imagezoo/brain-tumor-type and imagezoo/brain-mri-gate offline; yields its endpoint."""
    olah = shutil.which("olah-cli", path=os.path.dirname(sys.executable)) or shutil.which("olah-cli")
    if olah is None:
        pytest.skip("olah is not installed (pip install -e '.[test]')")
    root = tmp_path_factory.mktemp("hub")
    mirrors = root / "mirrors"
    publish(mirrors, nuclei_model, "imagezoo/nuclei-unet")
    publish(mirrors, trained_model, "imagezoo/ldc-live-dead")
    publish(mirrors, cell_counter_model, "imagezoo/ldc-viability")
    publish(mirrors, pets_model, "imagezoo/cats-dogs")
    for name in ("brain-tumor-type", "brain-mri-gate"):
        publish(mirrors, brain_models / name, f"imagezoo/{name}")
    port = free_port()
    config = root / "olah.toml"
    config.write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nrepos-path = "{root / "repos"}"\n'
        f'mirror-netloc = "127.0.0.1:{port}"\nmirror-lfs-netloc = "127.0.0.1:{port}"\n'
        f'mirrors-path = ["{mirrors}"]\n\n[accessibility]\noffline = true\n'
    )
    server = subprocess.Popen([olah, "-c", str(config)], cwd=root,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{endpoint}/api/models/imagezoo/nuclei-unet/revision/main", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("olah did not start")
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


def run_client(hub: str, tmp_path, code: str) -> dict:
    env = {**os.environ, "HF_ENDPOINT": hub, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_XET": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_nuclei_unet_downloads_by_hub_id(hub, tmp_path, dsb_dir, dsb_sample_ids):
    image = dsb_dir / dsb_sample_ids[0] / "images" / f"{dsb_sample_ids[0]}.png"
    code = f"""
import json, segmentation_models_pytorch as smp
from imagezoo.predictors import load_predictor
segmenter = load_predictor("hf-hub:imagezoo/nuclei-unet")
result = segmenter.segment({str(image)!r})
network = smp.from_pretrained("imagezoo/nuclei-unet")
print(json.dumps({{"kind": segmenter.kind, "revision": segmenter.revision, "shape": list(result.labels.shape),
                   "smp": type(network).__name__}}))
"""
    got = run_client(hub, tmp_path, code)
    assert got["kind"] == "segmenter" and got["smp"] == "Unet"
    assert len(got["revision"]) == 40  # the served git commit, as on huggingface.co
    assert got["shape"][0] > 0


def test_the_classifier_downloads_by_hub_id_through_timm(hub, tmp_path):
    code = f"""
import json, sys, timm, torch
from imagezoo.predictors import load_predictor
sys.path.insert(0, {str(ROOT / "training")!r})
from train_cell_counter import crop_classifier  # the counter's design (b) can start from a Hub classifier
model = timm.create_model("hf-hub:imagezoo/ldc-live-dead").eval()
classifier = load_predictor("hf-hub:imagezoo/ldc-live-dead")
found = [crop_classifier(name) for name in ("hf-hub:imagezoo/ldc-live-dead", "hf-hub:imagezoo/no-such-model", "")]
print(json.dumps({{"classes": model.num_classes, "kind": classifier.kind, "labels": list(classifier.label_names),
                  "folders": [pair is not None and (pair[0] / "model.safetensors").is_file()
                              and pair[1].label_names == classifier.label_names for pair in found]}}))
"""
    got = run_client(hub, tmp_path, code)
    assert got == {"classes": 2, "kind": "classifier", "labels": ["dead", "live"], "folders": [True, False, False]}


def test_the_cell_counter_downloads_by_hub_id_with_its_crop_classifier(hub, tmp_path, ldc_dir):
    image = ldc_dir / "b (1829).png"
    code = f"""
import json
from imagezoo.predictors import load_predictor
counter = load_predictor("hf-hub:imagezoo/ldc-viability")
result = counter.segment({str(image)!r})
print(json.dumps({{"kind": counter.kind, "classifier": counter.classifier.kind, "revision": counter.revision,
                   "cells": len(result.cells), "summary": result.summary}}))
"""
    got = run_client(hub, tmp_path, code)
    assert got["kind"] == "cell-counter" and got["classifier"] == "classifier"  # the sub-folder came along
    assert len(got["revision"]) == 40
    assert got["summary"]["n_live"] + got["summary"]["n_dead"] == got["cells"]


def test_the_pet_classifier_downloads_by_hub_id_with_its_onnx_runtimes(hub, tmp_path):
    code = """
import json, numpy as np, timm
from PIL import Image
from imagezoo.predictors import load_predictor
served = load_predictor("hf-hub:imagezoo/cats-dogs")
image = Image.new("RGB", (200, 150), (90, 140, 200))
probs = {runtime: load_predictor("hf-hub:imagezoo/cats-dogs", runtime=runtime).predict_images([image])
         for runtime in ("torch", "onnx")}
model = timm.create_model("hf-hub:imagezoo/cats-dogs")
print(json.dumps({"runtime": served.runtime, "config": served.config["runtime"], "labels": list(served.label_names),
                  "backstop": served.config["backstop"]["file"], "timm_classes": model.num_classes,
                  "gap": float(np.abs(probs["onnx"] - probs["torch"]).max())}))
"""
    got = run_client(hub, tmp_path, code)
    assert got["runtime"] == got["config"] and got["runtime"] in ("torch", "onnx", "onnx-int8")
    assert got["labels"] == ["cat", "dog", "neither"] and got["timm_classes"] == 3
    assert got["backstop"] == "backstop.safetensors" and got["gap"] < 1e-4  # the ONNX graph and backstop came along


def test_the_gated_brain_pipeline_downloads_by_hub_id_with_the_facts_its_chat_quotes(hub, tmp_path, brain_models):
    code = """
import json
from PIL import Image
from imagezoo.brain_mri import analyse, served_facts
from imagezoo.predictors import load_predictor
pipeline = load_predictor("hf-hub:imagezoo/brain-tumor-type", gate="hf-hub:imagezoo/brain-mri-gate")
refused = analyse(pipeline, Image.new("RGB", (200, 200), "white"))
by_default = load_predictor("hf-hub:imagezoo/brain-tumor-type")  # the gate its config names, same organisation
print(json.dumps({"kind": pipeline.kind, "revision": pipeline.revision, "refused": not refused.accepted,
                  "default": [by_default.kind, by_default.gate.model_id],
                  "backstop": pipeline.gate.config.get("backstop", {}).get("kind"),
                  "accuracy": served_facts(pipeline).type_accuracy}))
"""
    got = run_client(hub, tmp_path, code)
    local = json.loads((brain_models / "brain-tumor-type" / "eval_results.json").read_text())
    gate_config = json.loads((brain_models / "brain-mri-gate" / "config.json").read_text())
    assert got["kind"] == "gated-classifier" and got["refused"]
    assert got["default"] == ["gated-classifier", "hf-hub:imagezoo/brain-mri-gate"]
    assert got["backstop"] == gate_config.get("backstop", {}).get("kind")  # the backstop file came along
    assert got["accuracy"] == local["metrics"]["accuracy"]  # eval_results.json downloads with the weights
    assert len(got["revision"].split("+gate:")[1]) == 40


def test_a_space_folder_holds_the_app_and_the_package_it_imports(tmp_path):
    from imagezoo.hub import save_space_folder

    folder = save_space_folder(ROOT / "spaces" / "nuclei", tmp_path / "space")
    assert {"app.py", "requirements.txt", "README.md"} <= {path.name for path in folder.iterdir()}
    assert (folder / "imagezoo" / "predictors" / "segmenter.py").is_file()
    assert list((folder / "imagezoo" / "chat" / "knowledge").glob("*.json"))  # package data goes too
    assert not list(folder.rglob("__pycache__")) and not list(folder.rglob("*.pyc"))
