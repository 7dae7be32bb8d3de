"""Model selection on the validation split only (never the query set) and early stopping.

The public repos of DSCMR and SSAH pick the best epoch on the test queries; here the
validation split (ctx.validation, carved from the training side) plays that role: every
`eval_every` epochs the encoder is scored by the mean of image->text and text->image mAP on
validation-vs-validation retrieval, the best state is kept, and training stops after
`patience` evaluations without improvement.
"""
from __future__ import annotations

import copy
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from datasets import Split
from metrics import mean_average_precision

from .base import Encoder, FitContext


def cosine_map(query: torch.Tensor, retrieval: torch.Tensor, q_labels: torch.Tensor, r_labels: torch.Tensor) -> float:
    """Return mAP@all ranking `retrieval` by cosine similarity to each query (ties by index)."""
    return float(mean_average_precision(query, retrieval, q_labels, r_labels, metric="cosine"))


def validation_scores(encoder: Encoder, split: Split, use_embedding: bool = False) -> dict[str, float]:
    """Return {'val_map_i2t', 'val_map_t2i', 'val_map'} on `split` retrieving within itself under
    the split's relevance: Hamming mAP of the codes, or cosine mAP of Encoder.embed when use_embedding."""
    rel_img = torch.from_numpy(split.relevance_targets("image"))
    rel_txt = torch.from_numpy(split.relevance_targets("text"))
    if use_embedding:
        img, txt = encoder.embed("image", split.image), encoder.embed("text", split.text)
        assert img is not None and txt is not None, "use_embedding needs an encoder with embed()"
        i2t, t2i = cosine_map(img, txt, rel_img, rel_txt), cosine_map(txt, img, rel_txt, rel_img)
    else:
        img, txt = encoder.encode("image", split.image), encoder.encode("text", split.text)
        i2t = float(mean_average_precision(img, txt, rel_img, rel_txt))
        t2i = float(mean_average_precision(txt, img, rel_txt, rel_img))
    return {"val_map_i2t": i2t, "val_map_t2i": t2i, "val_map": 0.5 * (i2t + t2i)}


class EarlyStopping:
    """Keeps the best state of `modules` by a score (higher is better); says when to stop.

    `update(score)` returns True when training should stop: `patience` consecutive evaluations
    without an improvement of more than `min_delta`. `restore()` loads the best state back.
    """

    def __init__(self, modules: Mapping[str, nn.Module], patience: int, min_delta: float = 0.0):
        self.modules = dict(modules)
        self.patience = patience
        self.min_delta = min_delta
        self.best_score = -np.inf
        self.best_epoch = -1
        self.best_state: dict[str, dict] | None = None
        self.bad = 0

    def update(self, score: float, epoch: int) -> bool:
        """Record `score` at `epoch`; keep the state if it is the best so far; True = stop now."""
        if score > self.best_score + self.min_delta:
            self.best_score, self.best_epoch, self.bad = score, epoch, 0
            self.best_state = {k: copy.deepcopy(m.state_dict()) for k, m in self.modules.items()}
            return False
        self.bad += 1
        return self.bad >= self.patience

    def restore(self) -> None:
        """Load the best recorded state into the modules (no-op if nothing was recorded)."""
        if self.best_state is not None:
            for k, m in self.modules.items():
                m.load_state_dict(self.best_state[k])


class Selector:
    """Per-epoch bookkeeping shared by the methods: validation scoring every `eval_every`
    epochs (and at the last one), ctx.report of losses + scores, early stopping, best-state
    restore. Without a validation split it only reports and keeps the final state."""

    def __init__(self, ctx: FitContext, modules: Mapping[str, nn.Module], make_encoder: Callable[[], Encoder],
                 *, eval_every: int, patience: int, max_epochs: int, use_embedding: bool = False):
        self.ctx = ctx
        self.make_encoder = make_encoder
        self.eval_every = max(1, eval_every)
        self.max_epochs = max_epochs
        self.use_embedding = use_embedding
        self.stopper = EarlyStopping(modules, patience) if ctx.validation is not None else None
        self.modules = dict(modules)

    def end_epoch(self, epoch: int, values: Mapping[str, float]) -> bool:
        """Report epoch `epoch` (0-based); return True when training should stop. The callback
        (ctx.report) may raise, e.g. an Optuna prune: that propagates to the caller."""
        values = dict(values)
        stop = False
        last = epoch + 1 >= self.max_epochs
        if self.stopper is not None and ((epoch + 1) % self.eval_every == 0 or last):
            training = {k: m.training for k, m in self.modules.items()}
            with torch.no_grad():
                values.update(validation_scores(self.make_encoder(), self.ctx.validation, self.use_embedding))
            for k, m in self.modules.items():
                m.train(training[k])
            stop = self.stopper.update(values["val_map"], epoch)
        self.ctx.report(epoch, values)
        return stop or last

    def finish(self) -> int:
        """Restore the best state (when validating); return the selected epoch (-1 = last)."""
        if self.stopper is None:
            return -1
        self.stopper.restore()
        self.ctx.log(f"selected epoch {self.stopper.best_epoch} (validation mAP {self.stopper.best_score:.4f})")
        return self.stopper.best_epoch
