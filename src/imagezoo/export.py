"""ONNX exports of a classifier, and the onnxruntime session that serves them.

Besides the safetensors weights (the source of truth, what timm loads), a model folder may
carry ``model.onnx`` (fp32) and ``model.int8.onnx`` (static int8, per-channel weights), and
name in ``config.json`` (``runtime``) the one the training script measured as fastest
without losing accuracy. ONNX files are protobuf graphs: loading one never unpickles.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import timm
import torch
from timm.layers import set_layer_config
from torch import nn

from imagezoo.predictors.base import WEIGHTS_NAME

logger = logging.getLogger(__name__)

#: runtime name -> file in the model folder ("torch" runs the safetensors weights eagerly)
RUNTIME_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
RUNTIMES = ("torch", *RUNTIME_FILES)
INPUT_NAME = "pixel_values"


def exportable_copy(model: nn.Module) -> nn.Module:
    """The same network rebuilt with timm's ``exportable`` layer config (static-shape padding), same weights."""
    with set_layer_config(exportable=True):
        copy = timm.create_model(model.pretrained_cfg["architecture"], num_classes=model.num_classes,
                                 pretrained=False)
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def export_onnx(network: nn.Module, path: str | Path, img_size: int, opset: int = 17) -> Path:
    """Write ``network`` (built on :func:`exportable_copy` of a timm model) as ONNX with a dynamic batch
    axis; input ``pixel_values`` (N, 3, H, W) float, output what the network returns."""
    path = Path(path)
    dummy = torch.zeros(1, 3, img_size, img_size)
    torch.onnx.export(
        network.eval(), dummy, str(path), input_names=[INPUT_NAME], output_names=["logits"],
        dynamic_axes={INPUT_NAME: {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset, dynamo=False,
    )
    return path


#: where timm's EfficientNet stem (first convolution, its norm and the first stage) sits in an exported graph's
#: node names. Quantised, it alone kept the int8 cats-dogs graph under the 99% agreement rule (validation
#: agreement with torch 0.982 with it quantised, 0.992 float32; the last stage or the depthwise convolutions
#: float32 changed nothing: docs/experiments/cats-dogs.md, 2026-12-03)
STEM_PREFIXES = ("/conv_stem/", "/bn1/", "/blocks/blocks.0/")


def stem_nodes(graph) -> list[str]:
    """Names of the stem's nodes (:data:`STEM_PREFIXES`): the full-resolution layers, kept float32 in the int8 graph."""
    return [node.name for node in graph.node if node.name.startswith(STEM_PREFIXES)]


def head_nodes(graph) -> list[str]:
    """Names of the global pooling node and of every node fed by it: the head and a backstop's rule.

    They stay float32 in the int8 graph. Quantised, the backstop compared uint8 distances with its
    thresholds, and the clamp before the served network's final ``log`` rounded to 0 (outputs ``-inf``);
    the backbone holds nearly all the compute, so nothing is lost in speed."""
    pools = [node for node in graph.node if node.op_type in ("GlobalAveragePool", "ReduceMean")]
    if not pools:
        return []
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    head, pending = {}, [pools[-1]]
    while pending:
        node = pending.pop()
        if node.name not in head:
            head[node.name] = node
            pending.extend(consumer for output in node.output for consumer in consumers.get(output, []))
    return list(head)


def quantize_int8(fp32_path: str | Path, int8_path: str | Path, calibration: Iterable[np.ndarray]) -> Path:
    """Static int8 quantisation (QDQ, per-channel weights, uint8 activations) of the backbone, calibrated on
    ``calibration`` batches; the stem and the head stay float32 (:func:`stem_nodes`, :func:`head_nodes`)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch.astype(np.float32)}

    prepared = Path(int8_path).with_suffix(".prep.onnx")
    quant_pre_process(str(fp32_path), str(prepared))
    graph = onnx.load(str(prepared)).graph
    logging.disable(logging.INFO)  # onnxruntime logs one line per rescaled bias on the root logger
    try:
        quantize_static(
            str(prepared), str(int8_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=[*stem_nodes(graph), *head_nodes(graph)],
        )
    finally:
        logging.disable(logging.NOTSET)
        prepared.unlink(missing_ok=True)
    return Path(int8_path)


#: sessions a forked process inherited: kept, never freed there (their destructor waits for the parent's
#: thread pool, which a fork does not copy, and hangs)
_INHERITED_SESSIONS: list = []


class OnnxRunner:
    """An onnxruntime CPU session as a callable: float (N, 3, H, W) tensor -> logits tensor.

    The session is built in the process that runs it, with that process's torch thread count: a batch
    job's workers (forked, or spawned, which pickles the predictor) each build their own single-threaded
    one; a session cannot be pickled, and a forked copy of the parent's has lost its threads.
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = Path(path)
        self.threads = threads
        self._session, self._pid = self._new_session(), os.getpid()  # a bad file fails at load time

    def _new_session(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # idle workers sleep instead of spinning: a server decodes frames and runs torch between calls,
        # and spinning threads starve them (measured: torch's forward 2-3x slower beside a spinning session)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    @property
    def session(self):
        """This process's session (built on first use in a worker)."""
        if self._pid != os.getpid():
            if self._session is not None:
                _INHERITED_SESSIONS.append(self._session)
            self._session, self._pid = self._new_session(), os.getpid()
        return self._session

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_session": None, "_pid": None}

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {INPUT_NAME: batch.contiguous().numpy()})[0])


def latency_ms(run, batch: torch.Tensor, repeats: int = 50, warmup: int = 5) -> dict[str, float]:
    """Median and 95th-percentile wall time of ``run(batch)`` in milliseconds."""
    for _ in range(warmup):
        run(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(batch)
        times.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95))}


def compare_runtimes(
    network: nn.Module,
    folder: str | Path,
    img_size: int,
    splits: dict[str, tuple[list[torch.Tensor], np.ndarray]],
    calibration: list[torch.Tensor],
    runtimes: Iterable[str] = tuple(RUNTIME_FILES),
) -> list[dict]:
    """Export the served ``network`` for ``runtimes`` into ``folder`` and measure each beside torch in one
    run: on each of ``splits`` (name -> input batches, labels) its accuracy (``<split>_accuracy``) and
    agreement with torch's labels (``<split>_agreement_with_torch``); batch-1 latency (p50/p95 on this
    machine's threads)."""
    folder = Path(folder)
    served = copy.deepcopy(network).eval().to(memory_format=torch.channels_last)  # as ImageClassifier runs it
    runners = {"torch": lambda batch: served(batch.contiguous(memory_format=torch.channels_last))}
    if "onnx" in runtimes or "onnx-int8" in runtimes:
        export_onnx(network, folder / RUNTIME_FILES["onnx"], img_size)
        runners["onnx"] = OnnxRunner(folder / RUNTIME_FILES["onnx"])
    if "onnx-int8" in runtimes:
        quantize_int8(folder / RUNTIME_FILES["onnx"], folder / RUNTIME_FILES["onnx-int8"],
                      [batch.numpy() for batch in calibration])
        runners["onnx-int8"] = OnnxRunner(folder / RUNTIME_FILES["onnx-int8"])
    one = next(iter(splits.values()))[0][0][:1]
    rows, references = [], {}
    for name, run in runners.items():
        row = {"runtime": name, "file": RUNTIME_FILES.get(name, WEIGHTS_NAME)}
        for split, (batches, labels) in splits.items():
            with torch.inference_mode():
                predicted = np.concatenate([run(batch).argmax(-1).numpy() for batch in batches])
            reference = references.setdefault(split, predicted)  # torch runs first
            row[f"{split}_accuracy"] = float((predicted == np.asarray(labels)).mean())
            row[f"{split}_agreement_with_torch"] = float((predicted == reference).mean())
        with torch.inference_mode():
            row.update(latency_ms(run, one))
        rows.append(row)
        logger.info("runtime %s: %s", name, row)
    return rows


def choose_runtime(rows: list[dict], split: str = "validation", tolerance: float = 0.005,
                   min_agreement: float = 0.99) -> str:
    """The fastest runtime (p95) whose accuracy on ``split`` (validation: the test split only reports)
    is within ``tolerance`` of torch's and whose labels agree with torch's on at least ``min_agreement``
    of its images (an int8 graph can keep the accuracy while changing which images it gets wrong, e.g.
    by moving a threshold)."""
    accuracy, agreement = f"{split}_accuracy", f"{split}_agreement_with_torch"
    torch_accuracy = next(row[accuracy] for row in rows if row["runtime"] == "torch")
    eligible = [row for row in rows if row[accuracy] >= torch_accuracy - tolerance and row[agreement] >= min_agreement]
    return min(eligible, key=lambda row: row["p95_ms"])["runtime"]
