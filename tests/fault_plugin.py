"""A fast method and a small data set for the fault tests (imported by suites as a file, as a
user's plug-in would be): the method's fit takes `seconds`, reports a validation mAP each step,
and, when told, waits at a gate so a test can kill a process or a server at that point.

Gate: with $XMH_TEST_GATE set to a folder, a method configured with block = "fit" (or "encode")
writes <gate>/<label>.waiting when it reaches that point (inside fit, or in the first encode
after training) and waits until <gate>/<label>.go exists (at most 120 s)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datasets import CrossModalData, Split
from datasets.registry import register as register_dataset
from methods.base import Encoder, HashingMethod, sign_codes
from methods.registry import register


def gate(name: str) -> None:
    folder = os.environ.get("XMH_TEST_GATE")
    if not folder:
        return
    (Path(folder) / f"{name}.waiting").write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not (Path(folder) / f"{name}.go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@dataclass(frozen=True)
class GateConfig:
    seconds: float = 0.3  # how long a fit takes
    epochs: int = 2  # steps reported (one val_map each)
    block: str = ""  # "fit" or "encode": wait at the gate there
    gate_name: str = "cell"
    ridge: float = 1.0


class Projection(Encoder):
    def __init__(self, bits, weights, planes, block, name):
        self.bits, self.weights, self.planes, self.block, self.name = bits, weights, planes, block, name

    def encode(self, modality, features):
        if self.block == "encode":
            self.block = ""
            gate(self.name)
        return sign_codes(torch.from_numpy(features @ self.weights[modality] @ self.planes))


@register("gated-projection")
class GatedProjection(HashingMethod):
    Config = GateConfig

    @classmethod
    def search_space(cls, trial):
        return {"ridge": trial.suggest_float("ridge", 0.01, 100.0, log=True)}

    def fit(self, train, bits, ctx):
        cfg = self.config
        if cfg.block == "fit":
            gate(cfg.gate_name)
        rng = np.random.default_rng(ctx.seed)
        weights = {}
        for m in ("image", "text"):
            x = train.rows(m)
            weights[m] = np.linalg.solve(x.T @ x + cfg.ridge * np.eye(x.shape[1]), x.T @ (train.labels - 0.5))
        for step in range(cfg.epochs):
            time.sleep(cfg.seconds / max(cfg.epochs, 1))
            ctx.report(step, {"loss": 1.0 / (step + 1), "val_map": 0.5 + 0.01 * step})
        return Projection(bits, weights, rng.standard_normal((train.labels.shape[1], bits)).astype(np.float32),
                          cfg.block, cfg.gate_name)


@register_dataset("fault-blobs")
def load_blobs(seed: int = 0) -> CrossModalData:
    rng = np.random.default_rng(seed)
    labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 300)]

    def split(rows):
        return Split((labels[rows] @ (3 * rng.standard_normal((3, 12))) + rng.standard_normal((len(rows), 12))).astype(np.float32),
                     (labels[rows] @ (3 * rng.standard_normal((3, 6))) + rng.standard_normal((len(rows), 6))).astype(np.float32),
                     labels[rows])

    test = split(np.arange(200, 300))
    return CrossModalData("fault-blobs", split(np.arange(150)), test, test, validation=split(np.arange(150, 200)))
