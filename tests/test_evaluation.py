"""Metric numbers on hand-checkable inputs."""

import json

import numpy as np
import pytest

from imagezoo.evaluation import classification_metrics, expected_calibration_error, save_confusion_matrix


def test_metrics_on_a_small_known_case(tmp_path):
    y = [0, 0, 1, 1, 1, 1]
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7], [0.1, 0.9], [0.6, 0.4]])
    m = classification_metrics(y, probs, ["dead", "live"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 3 / 4) / 2)
    assert m["confusion_matrix"] == [[1, 1], [1, 3]]
    assert m["per_class"]["live"]["precision"] == pytest.approx(3 / 4)
    assert m["per_class"]["dead"]["recall"] == pytest.approx(1 / 2)
    assert m["roc_auc"] == pytest.approx(7 / 8)  # 7 of the 8 (live, dead) pairs are ranked right
    json.dumps(m)  # plain JSON all the way down
    png = save_confusion_matrix(m, ["dead", "live"], tmp_path / "cm.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_overconfident():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 200_000)
    correct = rng.uniform(size=confidence.size) < confidence
    y = np.where(correct, 1, 0)
    probs = np.stack([1 - confidence, confidence], axis=1)
    assert expected_calibration_error(y, probs) < 0.01
    overconfident = np.tile([0.01, 0.99], (1000, 1))
    labels = np.array([1] * 600 + [0] * 400)
    assert expected_calibration_error(labels, overconfident) == pytest.approx(0.39, abs=1e-6)


def test_paired_bootstrap_interval_brackets_the_difference():
    from imagezoo.evaluation import paired_bootstrap

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 600)
    better = np.where(rng.uniform(size=600) < 0.95, y, 1 - y)
    worse = np.where(rng.uniform(size=600) < 0.75, y, 1 - y)
    result = paired_bootstrap(y, better, worse, n_resamples=500)
    low, high = result["ci95"]
    assert low < result["difference"] < high and low > 0.1
    same = paired_bootstrap(y, better, better, n_resamples=100)
    assert same["difference"] == 0 and same["ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="too few for a bootstrap"):
        paired_bootstrap([0, 0, 0], [0, 0, 1], [0, 0, 0], n_resamples=10)


def test_model_index_lists_only_measured_numbers(tmp_path, monkeypatch):
    from imagezoo import cards

    (tmp_path / "tiny.md").write_text("---\n{{ card_data }}\n---\n# {{ model_name }}\n")
    monkeypatch.setattr(cards, "TEMPLATES", tmp_path)
    card = cards.model_card("tiny.md", dict(model_name="m", license="apache-2.0"),
                            results={"f1": 0.91234, "viability_mae": None, "roc_auc": float("nan")},
                            task_type="object-detection", dataset_name="d", dataset_type="org/d")
    assert [r.metric_type for r in card.data.eval_results] == ["f1"] and card.data.eval_results[0].metric_value == 0.9123
    with pytest.raises(FileNotFoundError, match="IMAGEZOO_CARD_TEMPLATES"):
        cards.model_card("missing.md", {}, {}, "t", "d", "org/d")
