"""The method protocol: fit on the training split for K bits -> an Encoder of ±1 codes.

Methods know nothing of MLflow or Optuna: the runner passes a FitContext with the seed, the
device, the validation split (for model selection / early stopping; never the query set) and a
per-epoch callback (MLflow curves, Optuna pruning: the callback may raise to stop training).
"""
from __future__ import annotations

import dataclasses
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


@dataclass
class FitContext:
    """What a runner hands to `fit`: seed, device, validation split, per-epoch callback, logger."""

    seed: int = 0
    device: str = "cpu"
    validation: Split | None = None
    on_report: Callable[[int, Mapping[str, float]], None] | None = None
    log: Callable[[str], None] = field(default=lambda message: None)

    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def report(self, epoch: int, values: Mapping[str, float]) -> None:
        """Pass one epoch's metrics to the callback (which may raise to stop training)."""
        if self.on_report is not None:
            self.on_report(epoch, dict(values))


class Encoder(ABC):
    """A trained model: encodes features of either modality to ±1 codes of `bits` bits."""

    bits: int

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
    def outputs(self, modality: Modality, features: np.ndarray) -> torch.Tensor:
        """Return the real-valued (n, bits) network outputs on the CPU, computed in batches."""
        net = self.nets[modality]
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        chunks = [net(x[i: i + self.batch_size].to(self.device)).float().cpu() for i in range(0, len(x), self.batch_size)]
        return torch.cat(chunks)

    def encode(self, modality: Modality, features: np.ndarray) -> torch.Tensor:
        return sign_codes(self.outputs(modality, features))


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


class HashingMethod(ABC):
    """Base class of registered methods. Subclasses set `Config` (a dataclass) and implement fit."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    # Bump when a change alters results: part of every run's identity (runs are reused by it).
    version: ClassVar[str] = "1"

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
        return cls(dataclasses.replace(cls.Config(), **values))

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
