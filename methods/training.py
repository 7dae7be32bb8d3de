"""The training loop every deep method shares: when to validate, when to stop, what to keep.

One rule for every method (`StoppingRule`, set per suite by the runner): the validation mAP
(`methods.selection.validation_scores`, mean of I->T and T->I within the validation split) is
evaluated every `eval_every` optimizer steps; the state with the highest score is kept and
restored at the end; training stops after `patience` evaluations in a row that do not beat the
score of the last accepted improvement by more than `min_delta`, or at `max_steps`. The step cap
defaults to the method's paper schedule (its paper epochs x its steps per epoch), so it scales
with the data set instead of being a fixed epoch count. A method only says what one of its
epochs is (`steps_per_epoch`) and how many its paper runs (`schedule_epochs`); `FitRecord`
says what happened.

Steps are optimizer steps of the method's own schedule, every network's counted (DCMH's text
and image passes, SSAH's label, discriminator, image and text passes), so `eval_every` and
`max_steps` mean the same thing for every method.
"""
from __future__ import annotations

import math
import time
from dataclasses import fields
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from . import selection
from .base import ConfigError, Encoder, FitContext, FitRecord, StoppingRule

__all__ = ["FitRecord", "StoppingRule", "stopping_rule", "Patience", "TrainingLoop", "minibatches", "seeded_generator"]


def stopping_rule(values: Mapping[str, Any]) -> StoppingRule:
    """Return the StoppingRule of a suite's [stopping] table (missing keys keep the defaults).
    ConfigError naming the field on an unknown key, a value of the wrong type or a value <= 0."""
    known = {f.name: f for f in fields(StoppingRule)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"[stopping]: unknown field(s) {unknown}; accepted: {', '.join(known)}")
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key == "min_delta":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            expected = "a number"
        else:
            ok = isinstance(value, int) and not isinstance(value, bool)
            expected = "an integer"
        if not ok:
            raise ConfigError(f"[stopping] field {key!r}: expected {expected} > 0, got {value!r}")
        if value <= 0:
            raise ConfigError(f"[stopping] field {key!r}: must be > 0, got {value!r}")
        out[key] = float(value) if key == "min_delta" else int(value)
    return StoppingRule(**out)


class Patience:
    """The rule's bookkeeping on a sequence of validation scores (higher is better).

    `update(score)` returns (is_best, stop). The best score (the one whose state is restored)
    is the highest seen, first occurrence on ties. The patience counter restarts only on an
    accepted improvement: a score above the reference by more than min_delta, which then
    becomes the reference. So `stop` means: the last `patience` scores all stayed within
    min_delta of the reference score that preceded them, i.e. validation mAP has not risen by
    more than the tolerance over `patience` evaluations, however it crept in between.
    """

    def __init__(self, patience: int, min_delta: float):
        self.patience, self.min_delta = patience, min_delta
        self.reference = -math.inf
        self.best = -math.inf
        self.waited = 0

    def update(self, score: float) -> tuple[bool, bool]:
        if math.isnan(score):  # never an improvement
            score = -math.inf
        is_best = score > self.best
        if is_best:
            self.best = score
        if score > self.reference + self.min_delta:
            self.reference, self.waited = score, 0
        else:
            self.waited += 1
        return is_best, self.waited >= self.patience


def seeded_generator(seed: int) -> torch.Generator:
    """Seed torch's global RNG (weight init) and return a separate generator for data order."""
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def minibatches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Yield shuffled index tensors covering range(n) once (the last one may be short), drawn
    from `generator`: ceil(n / batch_size) batches, one pass."""
    order = torch.randperm(n, generator=generator)
    for i in range(0, n, batch_size):
        yield order[i: i + batch_size]


def batches_per_pass(n: int, batch_size: int) -> int:
    """Return how many batches `minibatches(n, batch_size, ...)` yields."""
    return -(-n // batch_size)


class TrainingLoop:
    """Drives one fit under ctx.stopping. The method supplies the modules whose state decides
    the codes (kept and restored), a function building the Encoder over those live modules,
    the length of one of its epochs in optimizer steps and its paper's number of epochs.

        loop = TrainingLoop(ctx, {"net": net}, make_encoder, steps_per_epoch=spe, schedule_epochs=500)
        for epoch in loop.epochs():
            for idx in loop.batches(n, batch_size, generator):
                ...; opt.step()
                loop.step({"loss": loss})
        encoder.fit_record = loop.finish()

    `step` averages each reported value over the steps that reported it (0-d tensors or floats;
    tensors are read only at the reports, so a GPU is not synchronised per step) and at each evaluation calls
    ctx.report(step, {losses averaged since the last report, val_map_i2t, val_map_t2i,
    val_map}); whatever the callback raises (an Optuna prune) propagates. Without a validation
    split the values are reported every eval_every steps and the fit runs to the cap.
    """

    def __init__(self, ctx: FitContext, modules: Mapping[str, nn.Module], make_encoder: Callable[[], Encoder], *,
                 steps_per_epoch: int, schedule_epochs: int, use_embedding: bool = False):
        rule = ctx.stopping
        self.ctx = ctx
        self.modules = dict(modules)
        self.make_encoder = make_encoder
        self.use_embedding = use_embedding
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.eval_every = rule.eval_every or self.steps_per_epoch
        self.max_steps = rule.max_steps or self.steps_per_epoch * max(1, int(schedule_epochs))
        self.patience = Patience(rule.patience, rule.min_delta)
        self.steps = 0
        self.evaluations = 0
        self.best_step = 0
        self.best_state: dict[str, dict[str, torch.Tensor]] | None = None
        self.stop_reason: str | None = None
        self._sums: dict[str, tuple[Any, int]] = {}  # per key: (sum, steps that reported it)
        self._started = time.perf_counter()

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    @property
    def cap_epochs(self) -> int:
        """Epochs of the method's schedule that fit in the step cap (rounded up): what per-epoch
        schedules (DCMH's learning-rate decay) are spread over."""
        return -(-self.max_steps // self.steps_per_epoch)

    def epochs(self) -> Iterator[int]:
        """Yield epoch numbers 0, 1, ... until the loop has stopped."""
        epoch = 0
        while not self.done:
            yield epoch
            epoch += 1

    def batches(self, n: int, batch_size: int, generator: torch.Generator, passes: int = 1) -> Iterator[torch.Tensor]:
        """Yield the shuffled batches of `passes` passes over range(n), stopping as soon as the
        loop has stopped (so a method's nested pass loops need no break of their own)."""
        for _ in range(passes):
            for idx in minibatches(n, batch_size, generator):
                if self.done:
                    return
                yield idx

    def step(self, values: Mapping[str, Any] | None = None) -> bool:
        """Count one optimizer step with its training values; evaluate when due. True = stop now."""
        if self.done:
            raise RuntimeError("TrainingLoop.step called after the loop stopped")
        self.steps += 1
        for key, value in (values or {}).items():
            value = value.detach() if isinstance(value, torch.Tensor) else float(value)
            total, count = self._sums.get(key, (0.0, 0))
            self._sums[key] = (total + value, count + 1)
        at_cap = self.steps >= self.max_steps
        if self.steps % self.eval_every == 0 or at_cap:
            self._report_and_judge()
        if at_cap and not self.done:
            self.stop_reason = "step_cap" if self.ctx.validation is not None else "no_validation"
        return self.done

    def _report_and_judge(self) -> None:
        report = {k: float(total) / count for k, (total, count) in self._sums.items()}
        self._sums = {}
        if self.ctx.validation is not None:
            training = {k: m.training for k, m in self.modules.items()}
            with torch.no_grad():
                scores = selection.validation_scores(self.make_encoder(), self.ctx.validation, self.use_embedding)
            for k, m in self.modules.items():
                m.train(training[k])
            report.update(scores)
            self.evaluations += 1
            is_best, stop = self.patience.update(scores["val_map"])
            if is_best:
                self.best_step = self.steps
                self.best_state = {k: {name: t.detach().clone() for name, t in m.state_dict().items()}
                                   for k, m in self.modules.items()}
            if stop:
                self.stop_reason = "patience"
        self.ctx.report(self.steps, report)

    def finish(self) -> FitRecord:
        """Restore the best state (when validating; else the last one stays) and return the record."""
        if self.best_state is not None:
            for k, m in self.modules.items():
                m.load_state_dict(self.best_state[k])
        for m in self.modules.values():
            m.eval()
        validated = self.ctx.validation is not None and self.evaluations > 0
        record = FitRecord(
            steps=self.steps, best_step=self.best_step if validated else self.steps,
            best_score=self.patience.best if validated else math.nan, evaluations=self.evaluations,
            stop_reason=self.stop_reason or "step_cap", seconds=time.perf_counter() - self._started,
        )
        if validated:
            self.ctx.log(f"stopped ({record.stop_reason}) after {record.steps} steps; best step {record.best_step} "
                         f"(validation mAP {record.best_score:.4f}, {record.evaluations} evaluations, {record.seconds:.1f} s)")
        return record
