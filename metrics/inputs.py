"""Validated inputs of one evaluation, in the form each backend needs.

`prepare` checks shapes and the query side at once; the retrieval side (which may be a large
memory-mapped numpy array) is converted on demand, block by block: `Problem.dense()` gives the
float tensors of the torch backend, `Problem.packed()` the uint64 rows of the counting kernel
(codes and relevance packed side by side), never both unless asked.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .hamming import PACK_BLOCK_ROWS, as_pm1, code_kind, pack_bits, packed_codes, positive, writable

# Relevance representations of the packed rows (the kernel's modes, see counting_kernels.py).
MASKS, IDS, SPARSE = 0, 1, 2


@dataclass
class Packed:
    """uint64 rows for the counting kernel: code words, then the relevance part."""

    queries: np.ndarray  # (n_q, code_words + query label words)
    items: np.ndarray  # (n_r, code_words + item label words)
    code_words: int
    mode: int  # MASKS, IDS or SPARSE

    @property
    def four(self) -> bool:
        """One code word and one label word: the layout with four queries per pass."""
        return self.code_words == 1 and self.queries.shape[1] == 2 and self.items.shape[1] == 2 and self.mode != SPARSE


@dataclass
class Problem:
    """Queries (validated, on their device) and the retrieval side as given."""

    query: torch.Tensor  # float32 (n_q, d): ±1 codes, or unit-norm rows for cosine
    retrieval_codes: object  # tensor or numpy array (memory-mapped too), as given
    query_labels: torch.Tensor  # float32 (n_q, L) multi-hot, or int64 (n_q,) ids
    retrieval_labels: object
    metric: str  # "hamming" or "cosine"
    n_retrieval: int
    permutation: np.ndarray | None = None  # database order (MATLAB protocol)
    _cache: dict = field(default_factory=dict)

    @property
    def bits(self) -> int:
        return self.query.shape[1]

    @property
    def n_query(self) -> int:
        return self.query.shape[0]

    @property
    def device(self) -> torch.device:
        return self.query.device

    def dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(retrieval codes float32 ±1 or unit rows, retrieval labels) on the query's device."""
        if "dense" not in self._cache:
            if self.metric == "hamming":
                retrieval = as_pm1(self.retrieval_codes, "retrieval_codes").to(self.device)
            else:
                retrieval = torch.as_tensor(writable(self.retrieval_codes)).to(self.device, torch.float32)
                retrieval = torch.nn.functional.normalize(retrieval, dim=1)
            labels = labels_tensor(self.retrieval_labels, "retrieval_labels", self.device)
            if self.permutation is not None:
                perm = torch.from_numpy(self.permutation).to(self.device)
                retrieval, labels = retrieval[perm], labels[perm]
            self._cache["dense"] = retrieval, labels
        return self._cache["dense"]

    def packed(self) -> Packed:
        """Codes and relevance as uint64 rows for the counting kernel (built once per problem)."""
        if "packed" not in self._cache:
            query_codes = pack_bits((self.query > 0).cpu().numpy())
            if isinstance(self.retrieval_codes, torch.Tensor):  # checked by prepare already
                item_codes = pack_bits(positive(self.retrieval_codes))
            else:
                item_codes = packed_codes(self.retrieval_codes, "retrieval_codes", PACK_BLOCK_ROWS)
            mode, query_part, item_part = packed_relevance(self.query_labels, self.retrieval_labels)
            items = np.concatenate([item_codes, item_part], axis=1)
            if self.permutation is not None:
                items = items[self.permutation]
            self._cache["packed"] = Packed(np.ascontiguousarray(np.concatenate([query_codes, query_part], axis=1)),
                                           np.ascontiguousarray(items), query_codes.shape[1], mode)
        return self._cache["packed"]


def prepare(query_codes, retrieval_codes, query_labels, retrieval_labels, metric: str = "hamming",
            permutation_seed: int | None = None) -> Problem:
    """Validate shapes and the query side, keep the retrieval side for on-demand conversion."""
    if metric not in ("hamming", "cosine"):
        raise ValueError(f"metric must be 'hamming' or 'cosine', got {metric!r}")
    if metric == "hamming":
        query = as_pm1(query_codes, "query_codes")
        if not isinstance(retrieval_codes, np.ndarray):
            # Tensors are checked at once (they live in memory anyway), numpy arrays when read;
            # either is converted only to what the backend that runs needs.
            retrieval_codes = torch.as_tensor(retrieval_codes).detach()
            _shape(retrieval_codes, "retrieval_codes", "bits")
            code_kind(retrieval_codes, "retrieval_codes")
        shape = _shape(retrieval_codes, "retrieval_codes", "bits")
        if query.shape[1] != shape[1]:
            raise ValueError(f"query_codes have {query.shape[1]} bits but retrieval_codes have {shape[1]}; they must match")
    else:
        query = torch.as_tensor(query_codes)
        shape = _shape(retrieval_codes, "retrieval_codes")
        if query.ndim != 2 or query.shape[0] == 0 or query.shape[1] == 0:
            raise ValueError(f"query_codes must be a non-empty 2-D (items x dims) array, got shape {tuple(query.shape)}")
        if query.shape[1] != shape[1]:
            raise ValueError(f"query_codes have {query.shape[1]} dims but retrieval_codes have {shape[1]}; they must match")
        query = torch.nn.functional.normalize(query.to(torch.float32), dim=1)
    n_retrieval = shape[0]
    ql = labels_tensor(query_labels, "query_labels", query.device)
    _check_label_rows(ql.shape, "query_labels", query.shape[0], "query_codes")
    if not isinstance(retrieval_labels, np.ndarray):
        retrieval_labels = checked_labels(retrieval_labels, "retrieval_labels")  # converted when used
    rl_shape = _label_shape(retrieval_labels, "retrieval_labels")
    _check_label_rows(rl_shape, "retrieval_labels", n_retrieval, "retrieval_codes")
    if ql.ndim != len(rl_shape):
        raise ValueError("query_labels and retrieval_labels must both be multi-hot (2-D) or both ids (1-D)")
    if ql.ndim == 2 and ql.shape[1] != rl_shape[1]:
        raise ValueError(f"query_labels have {ql.shape[1]} label columns but retrieval_labels have {rl_shape[1]}; they must match")
    permutation = None
    if permutation_seed is not None:
        # MATLAB protocol: the database is a random permutation, then ties go by (permuted) index.
        generator = torch.Generator().manual_seed(int(permutation_seed))
        permutation = torch.randperm(n_retrieval, generator=generator).numpy()
    return Problem(query, retrieval_codes, ql, retrieval_labels, metric, n_retrieval, permutation)


def labels_tensor(labels, name: str, device: torch.device) -> torch.Tensor:
    """Validated relevance labels on `device`: float32 multi-hot (2-D) or int64 ids (1-D)."""
    labels = checked_labels(labels, name).to(device)
    return labels.to(torch.int64) if labels.ndim == 1 else labels.to(torch.float32)


def checked_labels(labels, name: str) -> torch.Tensor:
    """Relevance labels as a tensor of their own dtype, checked: integer-valued ids (1-D), or
    non-negative finite multi-hot entries (2-D; bool and unsigned rows need no pass)."""
    labels = torch.as_tensor(writable(labels))
    _label_shape(labels, name)
    if labels.ndim == 1:
        if labels.is_floating_point() and not bool((labels == labels.round()).all()):
            raise ValueError(f"{name} is 1-D, so it must hold integer class or instance ids")
        return labels
    if labels.dtype in (torch.bool, torch.uint8, torch.uint16, torch.uint32, torch.uint64):
        return labels
    low, high = torch.aminmax(labels if labels.dtype.is_floating_point else labels.to(torch.int64))  # NaN: both NaN
    if not (float(low) >= 0 and float(high) < float("inf")):
        raise ValueError(f"{name} must be non-negative multi-hot (0/1) labels, found negative or non-finite entries")
    return labels


def packed_relevance(query_labels: torch.Tensor, retrieval_labels) -> tuple[int, np.ndarray, np.ndarray]:
    """(mode, query part, item part) of the packed rows, uint64.

    1-D ids: one word each, relevant when equal (IDS). Multi-hot rows: bit masks (MASKS), one
    bit per label; when labels are wide and the items carry few of them (caption sets whose
    instance labels name a text's images), each item instead lists its labels and each query
    is a bitset over all labels (SPARSE): a few lookups per pair instead of one AND per word.
    """
    if query_labels.ndim == 1:
        ids = np.concatenate([labels_block(retrieval_labels, s, "retrieval_labels")
                              for s in range(0, _label_shape(retrieval_labels, "")[0], PACK_BLOCK_ROWS)])
        return IDS, query_labels.cpu().numpy().view(np.uint64)[:, None], ids.view(np.uint64)[:, None]
    n_labels, n_items = query_labels.shape[1], _label_shape(retrieval_labels, "")[0]
    query_present = (query_labels > 0).cpu().numpy()
    starts = range(0, n_items, PACK_BLOCK_ROWS)
    words = -(-n_labels // 64)
    if words > 1:
        per_item = max(int(labels_block(retrieval_labels, s, "retrieval_labels").sum(1).max(initial=0)) for s in starts)
        if 2 * max(per_item, 1) < words:
            # Item label lists padded with label n_labels, whose query bit is never set.
            lists = []
            for s in starts:
                rows, columns = np.nonzero(labels_block(retrieval_labels, s, "retrieval_labels"))
                block = np.full((min(PACK_BLOCK_ROWS, n_items - s), max(per_item, 1)), n_labels, dtype=np.int64)
                first_of_row = np.searchsorted(rows, rows)  # rows come sorted: each entry's row start
                block[rows, np.arange(len(rows)) - first_of_row] = columns
                lists.append(block)
            padded = np.zeros((query_present.shape[0], n_labels + 1), dtype=bool)
            padded[:, :n_labels] = query_present
            return SPARSE, pack_bits(padded), np.concatenate(lists).astype(np.uint64)
    items = np.concatenate([pack_bits(labels_block(retrieval_labels, s, "retrieval_labels")) for s in starts])
    return MASKS, pack_bits(query_present), items


def labels_block(labels, start: int, name: str) -> np.ndarray:
    """Rows start..start + PACK_BLOCK_ROWS of retrieval labels as numpy: int64 ids (1-D), or
    whether each label is present (2-D, bool); values checked."""
    block = labels[start: start + PACK_BLOCK_ROWS]
    if not isinstance(block, torch.Tensor):
        block = checked_labels(np.array(block), name)  # tensors were checked by prepare already
    block = block.cpu()
    if block.ndim == 1:
        return block.to(torch.int64).numpy()
    return positive(block)


def _shape(array, name: str, columns: str = "dims") -> tuple[int, ...]:
    shape = tuple(array.shape)
    if len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (items x {columns}) array, got shape {shape}")
    return shape


def _label_shape(labels, name: str) -> tuple[int, ...]:
    shape = tuple(labels.shape)
    if len(shape) not in (1, 2):
        raise ValueError(f"{name} must be 2-D multi-hot (items x labels) or 1-D integer ids, got shape {shape}")
    if len(shape) == 2 and shape[1] == 0:
        raise ValueError(f"{name} has 0 label columns; expected multi-hot rows with at least one column")
    return shape


def _check_label_rows(shape, name: str, n_rows: int, rows_name: str) -> None:
    if shape[0] != n_rows:
        raise ValueError(f"{name} has {shape[0]} rows but {rows_name} has {n_rows}; they must match")
