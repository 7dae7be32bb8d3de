"""What the tests' plug-in methods and data sets share: a ridge regression to the labels hashed
by random planes, and three Gaussian blobs as a small labelled data set.

Plug-ins are single files a suite imports by path, so tests/test_cluster.py and
tests/test_identity.py write this module's source at the top of the plug-in file they make;
tests/fault_plugin.py imports it from beside itself."""
from __future__ import annotations

import numpy as np
import torch

from datasets import CrossModalData, Split
from methods.base import Encoder, sign_codes


class PlaneProjection(Encoder):
    """Codes sign(x W_m P): a modality's ridge weights, then shared random planes."""

    def __init__(self, bits, weights, planes):
        self.bits, self.weights, self.planes = bits, weights, planes

    def encode(self, modality, features):
        return sign_codes(torch.from_numpy(features @ self.weights[modality] @ self.planes))


def ridge_projection(train, bits, ridge, seed, encoder=PlaneProjection, **extra):
    """Return `encoder` of a ridge regression of each modality to the centred labels."""
    rng = np.random.default_rng(seed)
    weights = {}
    for m in ("image", "text"):
        x = train.rows(m)
        weights[m] = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ (train.labels - 0.5))
    return encoder(bits, weights, rng.standard_normal((train.labels.shape[1], bits)).astype(np.float32), **extra)


def blobs(name: str, seed: int = 0) -> CrossModalData:
    """Return 300 items of three classes: 12-d images and 6-d texts around class means."""
    rng = np.random.default_rng(seed)
    labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 300)]

    def split(rows):
        return Split((labels[rows] @ (3 * rng.standard_normal((3, 12))) + rng.standard_normal((len(rows), 12))).astype(np.float32),
                     (labels[rows] @ (3 * rng.standard_normal((3, 6))) + rng.standard_normal((len(rows), 6))).astype(np.float32),
                     labels[rows])

    test = split(np.arange(200, 300))
    return CrossModalData(name, split(np.arange(150)), test, test, validation=split(np.arange(150, 200)))
