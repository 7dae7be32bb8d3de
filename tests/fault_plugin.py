"""A fast method and a small data set for the fault tests (imported by suites as a file, as a
user's plug-in would be): the method's fit takes `seconds`, reports a validation mAP each step,
and, when told, waits at a gate so a test can kill a process or a server at that point.

Gate: with $XMH_TEST_GATE set to a folder, a method configured with block = "fit" (or "encode")
writes <gate>/<label>.waiting when it reaches that point (inside fit, or in the first encode
after training) and waits until <gate>/<label>.go exists (at most 120 s)."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from datasets import CrossModalData
from datasets.registry import register as register_dataset
from methods.base import HashingMethod
from methods.registry import register

sys.path.insert(0, str(Path(__file__).resolve().parent))  # plugin_parts beside this file
from plugin_parts import PlaneProjection, blobs, ridge_projection  # noqa: E402


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


class Projection(PlaneProjection):
    def __init__(self, bits, weights, planes, block, name):
        super().__init__(bits, weights, planes)
        self.block, self.name = block, name

    def encode(self, modality, features):
        if self.block == "encode":
            self.block = ""
            gate(self.name)
        return super().encode(modality, features)


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
        encoder = ridge_projection(train, bits, cfg.ridge, ctx.seed, Projection, block=cfg.block, name=cfg.gate_name)
        for step in range(cfg.epochs):
            time.sleep(cfg.seconds / max(cfg.epochs, 1))
            ctx.report(step, {"loss": 1.0 / (step + 1), "val_map": 0.5 + 0.01 * step})
        return encoder


@register_dataset("fault-blobs")
def load_blobs(seed: int = 0) -> CrossModalData:
    return blobs("fault-blobs", seed)
