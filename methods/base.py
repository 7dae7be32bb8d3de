"""The method protocol: fit on the training split for K bits -> an Encoder of ±1 codes.

Methods know nothing of MLflow or Optuna: the runner passes a FitContext with the seed, the
device, the validation split (for model selection and stopping; never the query set), the
stopping rule every deep method trains under (methods.training) and a report callback (MLflow
curves, Optuna pruning: the callback may raise to stop training). Deep methods attach a
FitRecord (steps run, best step, stop reason, seconds) to the Encoder they return.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal, Mapping

import numpy as np
import torch

from datasets import Split

Modality = Literal["image", "text"]
MODALITIES: tuple[Modality, ...] = ("image", "text")


class ConfigError(ValueError):
    """A config override names an unknown field or has a value of the wrong type."""


def check_bits(bits: Any) -> int:
    """Return `bits` as an int, or raise ValueError unless it is a positive integer."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits <= 0:
        raise ValueError(f"bits must be a positive integer (e.g. 16, 32, 64), got {bits!r}")
    return int(bits)


def sign_codes(x: torch.Tensor) -> torch.Tensor:
    """Return ±1 int8 codes of a real tensor, with sign(0) = +1 (torch.sign would give 0)."""
    return torch.where(x >= 0, 1, -1).to(torch.int8)


# The rule's defaults, chosen on validation curves: benchmarks/results/stopping.md.
DEFAULT_PATIENCE = 10
DEFAULT_MIN_DELTA = 1e-3


@dataclass(frozen=True)
class StoppingRule:
    """When every deep method validates and stops (methods.training); set per suite.

    eval_every: optimizer steps between validation evaluations; None = one epoch of the
    method's own schedule. patience: evaluations in a row without an improvement of more than
    min_delta (validation mAP) before stopping. max_steps: step cap; None = the method's paper
    schedule in steps (paper epochs x steps per epoch, so it scales with the data set).
    """

    eval_every: int | None = None
    patience: int = DEFAULT_PATIENCE
    min_delta: float = DEFAULT_MIN_DELTA
    max_steps: int | None = None


@dataclass(frozen=True)
class FitRecord:
    """What a deep method's fit did. steps: optimizer steps run; best_step: the step whose state
    was restored (= steps without validation); best_score: its validation mAP (NaN without
    validation); evaluations: validation evaluations made; stop_reason: "patience" | "step_cap"
    | "no_validation" (ran to the cap without a validation split) | "closed_form" (set by the
    runner for methods without iterations); seconds: wall time of the fit."""

    steps: int
    best_step: int
    best_score: float
    evaluations: int
    stop_reason: str
    seconds: float


@dataclass
class FitContext:
    """What a runner hands to `fit`: seed, device, validation split, stopping rule, report
    callback (optimizer step, values), logger."""

    seed: int = 0
    device: str = "cpu"
    validation: Split | None = None
    stopping: StoppingRule = field(default_factory=StoppingRule)
    on_report: Callable[[int, Mapping[str, float]], None] | None = None
    log: Callable[[str], None] = field(default=lambda message: None)

    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def report(self, step: int, values: Mapping[str, float]) -> None:
        """Pass the values at optimizer step `step` to the callback (which may raise to stop training)."""
        if self.on_report is not None:
            self.on_report(step, dict(values))


class Encoder(ABC):
    """A trained model: encodes features of either modality to ±1 codes of `bits` bits.
    fit_record: what the fit did (deep methods); None for closed-form methods."""

    bits: int
    fit_record: FitRecord | None = None

    @abstractmethod
    def encode(self, modality: Modality, features: np.ndarray) -> torch.Tensor:
        """Return (n, bits) int8 codes in {-1, +1} on the CPU."""

    def embed(self, modality: Modality, features: np.ndarray) -> torch.Tensor | None:
        """Return real-valued (n, d) embeddings for cosine ranking, or None for pure hashing."""
        return None


class TorchEncoder(Encoder):
    """Encoder from one torch module per modality; codes are the sign of the module output."""

    def __init__(self, bits: int, nets: Mapping[str, torch.nn.Module], device: torch.device, batch_size: int = 4096):
        self.bits = bits
        self.nets = {k: v.eval() for k, v in nets.items()}
        self.device = device
        self.batch_size = batch_size

    @torch.no_grad()
    def apply(self, net: torch.nn.Module, features: np.ndarray) -> torch.Tensor:
        """Return net(features) as float32 on the CPU, computed in batches on the device."""
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        return torch.cat([net(x[i: i + self.batch_size].to(self.device)).float().cpu()
                          for i in range(0, len(x), self.batch_size)])

    def outputs(self, modality: Modality, features: np.ndarray) -> torch.Tensor:
        """Return the real-valued (n, bits) network outputs on the CPU."""
        return self.apply(self.nets[modality], features)

    def encode(self, modality: Modality, features: np.ndarray) -> torch.Tensor:
        return sign_codes(self.outputs(modality, features))


class EmbeddingEncoder(TorchEncoder):
    """TorchEncoder whose encode() is sign(code_nets[m](x)) and whose embed() returns
    embed_nets[m](x), real-valued features for cosine ranking."""

    def __init__(self, bits: int, code_nets: Mapping[str, torch.nn.Module], embed_nets: Mapping[str, torch.nn.Module],
                 device: torch.device):
        super().__init__(bits, code_nets, device)
        self.embedders = {k: v.eval() for k, v in embed_nets.items()}

    def embed(self, modality, features):  # type: ignore[override]
        """Return (n, d) float32 embeddings on the CPU."""
        return self.apply(self.embedders[modality], features)


class View(torch.nn.Module):
    """One modality's path through a shared model: forward(x) = fn(model, modality, x).
    Lets TorchEncoder treat a two-modality model as one module per modality."""

    def __init__(self, model: torch.nn.Module, modality: str, fn):
        super().__init__()
        self.model, self.modality, self.fn = model, modality, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.model, self.modality, x)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a suite/CLI value to the config field's declared type, or raise ConfigError."""
    origin = typing.get_origin(annotation)
    if annotation in (float,) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation in (int,) and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is str and isinstance(value, str):
        return value
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(annotation)
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, where) for v in value)
    if origin is Literal and value in typing.get_args(annotation):
        return value
    if annotation is Any:
        return value
    raise ConfigError(f"{where}: expected {getattr(annotation, '__name__', annotation)}, got {value!r}")


# Config fields that count how long a fit trains: a value <= 0 trains nothing (a FINISHED run of an
# untrained model, "selected epoch -1"), so it is refused before anything runs.
TRAINING_LENGTH = re.compile(r"(max_)?(epochs|steps|passes|iterations|iters)|\w+_(epochs|steps|passes|iterations|iters)|eval_every")


def check_training_lengths(method: str, config: Any) -> None:
    """Raise ConfigError if a field of `config` counting epochs, steps or passes (TRAINING_LENGTH),
    or an entry of such a tuple (passes per group), is an integer <= 0."""
    for name, value in dataclasses.asdict(config).items():
        if not TRAINING_LENGTH.fullmatch(name):
            continue
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, int) and not isinstance(v, bool) and v <= 0:
                raise ConfigError(f"method {method!r} field {name!r} is {value!r}; it counts how long the fit "
                                  "trains and must be an integer >= 1")


class HashingMethod(ABC):
    """Base class of registered methods. Subclasses set `Config` (a dataclass) and implement fit."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    # Bump when a change alters results: part of every run's identity (runs are reused by it).
    version: ClassVar[str] = "1"
    # True for methods trained by optimizer steps under the shared StoppingRule (they attach a
    # FitRecord); False for the closed-form / alternating-solve classic baselines.
    trained_by_steps: ClassVar[bool] = False

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any] | None = None) -> "HashingMethod":
        """Return an instance whose config is the defaults with `overrides` applied (checked)."""
        overrides = dict(overrides or {})
        fields = {f.name: f for f in dataclasses.fields(cls.Config)}
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise ConfigError(
                f"method {cls.name!r}: unknown config field(s) {unknown}; accepted: {', '.join(sorted(fields))}"
            )
        hints = typing.get_type_hints(cls.Config)
        values = {k: _coerce(v, hints[k], f"method {cls.name!r} field {k!r}") for k, v in overrides.items()}
        config = dataclasses.replace(cls.Config(), **values)
        check_training_lengths(cls.name, config)
        cls.check_config(config)
        return cls(config)

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Raise ConfigError naming the field if `config` breaks a method's own constraint (types
        and training lengths are checked before); the default has none."""

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Return config overrides drawn from an Optuna `trial` (names are Config fields).

        Each method declares what is worth tuning; runners.tune calls this per trial."""
        raise NotImplementedError(f"method {cls.name!r} declares no search space")

    def params(self) -> dict[str, Any]:
        """Return the full config as a flat dict of plain values (for logging and run keys)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self.config).items()}

    @abstractmethod
    def fit(self, train: Split, bits: int, ctx: FitContext) -> Encoder:
        """Train on `train` for `bits`-bit codes; return the Encoder."""
