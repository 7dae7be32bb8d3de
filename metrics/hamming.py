"""Binary codes: validation, sign with sign(0) = +1, Hamming distances, and bit packing."""
from __future__ import annotations

import numpy as np
import torch

# Rows per block when codes are validated and packed block by block (memory-mapped arrays are
# never converted whole): 64K rows of 64 int8 codes are 4 MB.
PACK_BLOCK_ROWS = 1 << 16


def binarize(values: torch.Tensor) -> torch.Tensor:
    """Return float32 ±1 codes from real values: +1 where value >= 0, -1 elsewhere.

    Unlike torch.sign / np.sign, an exact 0 maps to +1; sign(0) = 0 would give half-integer
    Hamming distances and silently corrupt every ranking metric.
    """
    values = torch.as_tensor(values)
    if values.is_floating_point() and bool(torch.isnan(values).any()):
        raise ValueError("binarize: values contain NaN")
    return torch.where(values >= 0, 1.0, -1.0).to(torch.float32)


def as_pm1(codes: torch.Tensor, name: str = "codes") -> torch.Tensor:
    """Return `codes` as float32 ±1 (items x bits), on the device where `codes` lives.

    Accepts entries all in {-1, +1} or all in {0, 1} (bool counts as {0, 1}). A mix of -1, 0 and
    +1 is the sign(0) bug and is refused rather than guessed; use `binarize` on real values.
    """
    codes = _code_tensor(codes, name)
    kind = code_kind(codes, name)
    return codes.to(torch.float32) * 2 - 1 if kind == "0/1" else codes.to(torch.float32)


def code_kind(codes: torch.Tensor, name: str = "codes") -> str:
    """Which value set a block of codes uses: "±1", "0/1", or "ones" (all +1, the same either
    way); raises on any other value (the sign(0) mix -1/0/+1 gets its own message)."""
    if codes.dtype == torch.bool:
        return "0/1"
    if codes.is_complex():
        raise ValueError(f"{name} must be real ±1 or 0/1 codes, got dtype {codes.dtype}")
    if codes.dtype not in _SIGNED_DTYPES:
        # Unsigned integers first: in torch, uint8 255 == -1 is true, and aminmax has no
        # uint16/32/64 kernels; float8 has neither aminmax nor numpy.
        codes = codes.to(torch.float32 if codes.is_floating_point() else torch.int64)
    # One aminmax pass, then one membership pass (numpy on CPU: several times faster than
    # torch's bool-producing comparisons); validation was a tenth of the fused mAP's time.
    # The minimum says which value set to check, so each input takes at most two passes.
    low, high = (float(v) for v in torch.aminmax(codes))  # NaN shows up in both
    if low == -1 and high <= 1:
        if _only(codes, (-1, 1)):
            return "±1"
        if _only(codes, (-1, 0, 1)):
            raise ValueError(_sign_zero_message(name))
    elif low >= 0 and high <= 1 and _only(codes, (0, 1)):
        return "ones" if low == 1 else "0/1"
    bad = codes[(codes != 1) & (codes != -1) & (codes != 0)]
    raise ValueError(f"{name} must contain only ±1 (or only 0/1) values, found e.g. {bad[:5].tolist()}")


def packed_codes(codes, name: str = "codes", block_rows: int | None = None) -> np.ndarray:
    """Validate codes (as as_pm1 does) and pack bit b of each row as bit b % 64 of word b // 64:
    uint64 (n, ceil(bits / 64)), 1 where the code is +1. Numpy inputs (memory-mapped too) are
    read in blocks of rows, so no float copy of the whole array is ever made."""
    block_rows = block_rows or PACK_BLOCK_ROWS
    if isinstance(codes, np.ndarray):
        _check_shape(codes.shape, name)
        blocks = (torch.from_numpy(np.array(codes[start: start + block_rows]))
                  for start in range(0, codes.shape[0], block_rows))
    else:
        codes = _code_tensor(codes, name)
        blocks = (codes[start: start + block_rows] for start in range(0, codes.shape[0], block_rows))
    words, kinds = [], set()
    for block in blocks:
        kinds.add(code_kind(block, name))
        words.append(pack_bits(positive(block)))
    if {"±1", "0/1"} <= kinds:  # -1 in one block, 0 in another: the sign(0) mix after all
        raise ValueError(_sign_zero_message(name))
    return words[0] if len(words) == 1 else np.concatenate(words)


def positive(codes: torch.Tensor) -> np.ndarray:
    """codes > 0 as a numpy bool array (numpy's comparison is several times faster than torch's)."""
    codes = codes.detach().cpu()
    if codes.dtype in _NUMPY_DTYPES or codes.dtype in (torch.bool, torch.uint8):
        return codes.numpy() > 0
    return (codes.to(torch.float32) > 0).numpy()


def pack_bits(present: np.ndarray) -> np.ndarray:
    """Boolean rows as little-endian uint64 bit masks, shape (n, ceil(d / 64))."""
    n, d = present.shape
    if d % 64:
        # Widened to whole words first: packbits on rows that are not a multiple of 8 bytes
        # wide (24 MIRFlickr labels) is ~3x slower than on the padded copy.
        padded = np.zeros((n, -(-d // 64) * 64), dtype=bool)
        padded[:, :d] = present
        present = padded
    return np.packbits(present, axis=1, bitorder="little").view(np.uint64)


def hamming_distance(query: torch.Tensor, retrieval: torch.Tensor) -> torch.Tensor:
    """Return (n_q, n_r) int32 Hamming distances between ±1 codes, 0.5 * (K - q . r)."""
    k = query.shape[1]
    return (0.5 * (k - query.float() @ retrieval.float().t())).round().to(torch.int32)


def _code_tensor(codes, name: str) -> torch.Tensor:
    codes = torch.as_tensor(writable(codes)).detach()  # metrics are not differentiated through
    _check_shape(codes.shape, name)
    return codes


def writable(array):
    """A read-only numpy array (e.g. memory-mapped) as a copy torch can wrap without a warning;
    anything else as it is."""
    return np.array(array) if isinstance(array, np.ndarray) and not array.flags.writeable else array


def _check_shape(shape, name: str) -> None:
    if len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (items x bits) array, got shape {tuple(shape)}")


def _sign_zero_message(name: str) -> str:
    return (f"{name} mixes -1, 0 and +1 (the sign(0) bug of torch.sign / np.sign); "
            "expected all ±1 or all 0/1: binarize real values with metrics.binarize (0 -> +1)")


_SIGNED_DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.int16, torch.int32, torch.int64}
_NUMPY_DTYPES = _SIGNED_DTYPES - {torch.bfloat16}  # numpy has no bfloat16


def _only(codes: torch.Tensor, values: tuple[int, ...]) -> bool:
    """True when every entry of `codes` equals one of `values`."""
    x = codes.numpy() if codes.device.type == "cpu" and codes.dtype in _NUMPY_DTYPES else codes
    hit = x == values[0]
    for value in values[1:]:
        hit |= x == value
    return bool(hit.all())
