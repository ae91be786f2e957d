"""A gate in front of a classifier: "is this the kind of image the model was made for?".

The gate is a linear probe: a logistic regression on the pooled features of a frozen
ImageNet backbone, fit with scikit-learn. Because the backbone never changes, features are
extracted once, and leave-one-source-out (refit without source X, measure refusals on X) costs
seconds per source: the honest estimate of what the gate does with a kind of image nobody
anticipated. The fitted probe becomes the timm model's classifier, so the gate is an ordinary
timm folder. A Mahalanobis distance to the accepted class's features is measured beside it as a
feature-space backstop candidate.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression
from torch import nn

from imagezoo.open_set import MahalanobisBackstop, threshold_keeping


@torch.inference_mode()
def pooled_features(model: nn.Module, batches: Iterable[torch.Tensor]) -> np.ndarray:
    """The classifier's input (timm's pre-logits features) for every normalised batch."""
    model.eval()
    return np.concatenate([model.forward_head(model.forward_features(x), pre_logits=True).numpy() for x in batches])


def fit_probe(features: np.ndarray, labels: np.ndarray, C: float = 1.0, seed: int = 0) -> LogisticRegression:
    """Class-balanced logistic regression: the sources differ in size, the classes too."""
    return LogisticRegression(C=C, class_weight="balanced", max_iter=5000, random_state=seed).fit(features, labels)


def probe_as_head(probe: LogisticRegression, head: nn.Linear) -> None:
    """Write a fitted probe into a 2-class linear head: logits (-z/2, z/2) give softmax = the probe's
    sigmoid(z), so plain timm, imagezoo and ONNX all serve the probe's probabilities."""
    half_weight = torch.as_tensor(probe.coef_[0] / 2, dtype=head.weight.dtype)
    half_bias = float(probe.intercept_[0] / 2)
    with torch.no_grad():
        head.weight.copy_(torch.stack([-half_weight, half_weight]))
        head.bias.copy_(torch.tensor([-half_bias, half_bias]))


class MahalanobisScore:
    """Squared Mahalanobis distance to the accepted class's features (Ledoit-Wolf shrunk covariance):
    large for any image unlike the accepted ones, whatever the negatives seen in training were."""

    def __init__(self, features: np.ndarray):
        self.estimator = LedoitWolf().fit(features)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return self.estimator.mahalanobis(features)

    def max_distance(self, accepted_validation: np.ndarray, keep: float) -> float:
        """The distance under which ``keep`` of the accepted class's validation images fall."""
        return -threshold_keeping(-self(accepted_validation), keep)

    def as_backstop(self, max_distance: float) -> MahalanobisBackstop:
        """The same distance as a torch module that serves in the model's forward pass."""
        return MahalanobisBackstop(torch.from_numpy(self.estimator.location_),
                                   torch.from_numpy(self.estimator.get_precision()), max_distance)


#: the rules a gate is judged by: the probe alone, and the probe with the Mahalanobis backstop
CANDIDATES = ("probe", "probe + mahalanobis")


def leave_one_source_out(
    features: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    sources: dict[str, np.ndarray],
    accept: int,
    C: float = 1.0,
    keep: float = 0.999,
    seed: int = 0,
    views: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, dict[str, dict]]:
    """For each source: refit without its training images, then measure it over its images in each view's
    splits (``views``: name -> splits, default ``{"all": every split}``; a decision reads train and validation
    only, the test split reports). Each fold is fitted once for every view. Returns view -> source -> row.

    ``features`` / ``labels`` / ``sources`` are keyed by split (train, validation, test); ``accept`` is the
    label id of the accepted class. Each row has ``n``, ``accepted_class`` (whether the source is of the
    accepted class) and, per candidate rule, the fraction of the source's images it got right (accepted
    for an accepted-class source, refused otherwise) plus the test acceptance of the accepted class by
    that fold's gate (without the left-out source). Candidates: ``probe``; ``probe + mahalanobis`` (also
    refused when the distance exceeds the threshold keeping ``keep`` of the validation images of the
    accepted class).
    """
    every = np.concatenate(list(sources.values()))
    views = views or {"all": tuple(sources)}
    rows: dict[str, dict[str, dict]] = {view: {} for view in views}
    for source in sorted(set(every.tolist())):
        fit_rows = sources["train"] != source
        probe = fit_probe(features["train"][fit_rows], labels["train"][fit_rows], C, seed)
        accepted_train = fit_rows & (labels["train"] == accept)
        mahalanobis = MahalanobisScore(features["train"][accepted_train])
        val_accepted = (labels["validation"] == accept) & (sources["validation"] != source)
        max_distance = mahalanobis.max_distance(features["validation"][val_accepted], keep)
        rules = dict(zip(CANDIDATES, (
            lambda f: probe.predict(f) == accept,
            lambda f: (probe.predict(f) == accept) & (mahalanobis(f) <= max_distance),
        )))
        in_source = {split: sources[split] == source for split in sources}
        test_accepted = {name: float(rule(features["test"][(labels["test"] == accept) & ~in_source["test"]]).mean())
                         for name, rule in rules.items()}
        for view, measured in views.items():
            splits = [split for split in measured if in_source[split].any()]
            if not splits:  # a source with images only in the splits not measured
                continue
            held = np.concatenate([features[split][in_source[split]] for split in splits])
            is_accepted_class = bool(np.concatenate([labels[split][in_source[split]] for split in splits])[0] == accept)
            row = {"n": int(len(held)), "accepted_class": is_accepted_class}
            for name, rule in rules.items():
                accepted = rule(held)
                row[name] = float(accepted.mean() if is_accepted_class else (~accepted).mean())
                row[f"{name}: test accepted"] = test_accepted[name]
            rows[view][source] = row
    return rows


def summarise(loso: dict[str, dict], candidates: Sequence[str]) -> dict[str, dict]:
    """Per candidate: the worst and pooled refusal over the negative sources, and the worst test
    acceptance of the accepted class over the folds."""
    out = {}
    for name in candidates:
        negatives = {s: r for s, r in loso.items() if not r["accepted_class"]}
        refused = sum(r[name] * r["n"] for r in negatives.values()) / sum(r["n"] for r in negatives.values())
        out[name] = {
            "min_refused": min(r[name] for r in negatives.values()),
            "worst_source": min(negatives, key=lambda s: negatives[s][name]),
            "refused_pooled": float(refused),
            "min_test_accepted": min(r[f"{name}: test accepted"] for r in loso.values()),
            "unseen_accepted_sources": {s: r[name] for s, r in loso.items() if r["accepted_class"]},
        }
    return out
