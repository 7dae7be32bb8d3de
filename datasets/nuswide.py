"""NUS-WIDE, two cleaned versions used by cross-modal hashing papers.

- TC-21 (DCMH/SSAH/DADH): 195,834 pairs, 1,000-d tags, 21 labels. DADH's `NUS-WIDE-TC21.mat`
  with keys `image` (4096-d), `text` (1000-d), `label` (21); DADH's code reads it with
  scipy (v5), a v7.3 copy works the same. DADH trains on 10,000 items: pass n_train=10000.
- TC-10 (DJSRH/UCCH): ~186k pairs, 10 labels, split files `nus-wide-tc10-{xall-vgg,yall,lall}.mat`
  with keys XAll, YAll, LAll.
Both are large: HDF5 sources over 512 MiB go through the checksum-keyed cache (cache.py).
Protocol `dcmh`: 2,100 queries, the rest retrieval, 10,500 train drawn from retrieval (some
papers use 10,000: pass n_train). TC-10 uses the same defaults here; DJSRH-style runs use other
sizes (e.g. 2,000 queries / 5,000 train): pass n_query / n_train. Protocol `ucch` (UCCH on
TC-10): the last 2,100 rows are queries, the rest retrieval = train.
"""
from __future__ import annotations

from pathlib import Path

from .container import CrossModalData, DataError
from .generic import load_spec
from .paths import resolve
from .registry import register

TC21_FILE = "NUS-WIDE-TC21.mat"
TC21_KEYS = {"image": ("image", "XAll", "IAll"), "text": ("text", "YAll"), "labels": ("label", "LAll")}
TC10_FILES = {"image": ("nus-wide-tc10-xall-vgg.mat", ("XAll",)), "text": ("nus-wide-tc10-yall.mat", ("YAll",)),
              "labels": ("nus-wide-tc10-lall.mat", ("LAll",))}


def _tc10_spec(where: Path, image_path=None) -> dict:
    spec = {}
    for field, (fname, keys) in TC10_FILES.items():
        p = where / fname
        if field == "image" and image_path is not None:
            p = Path(image_path)
        if not p.exists():
            raise DataError(f"nus-wide-tc10: {p} not found; expected the split files {[f for f, _ in TC10_FILES.values()]}")
        spec[field] = (p, keys)
    return spec


@register("nus-wide-tc21")
def load_tc21(
    root=None, path=None, *, protocol: str = "dcmh", seed: int = 0, n_query: int = 2100, n_train: int = 10500,
    n_validation: int = 0, cache: bool | None = None, cache_dir=None,
) -> CrossModalData:
    """Return NUS-WIDE TC-21 (DADH file) under the DCMH protocol."""
    where = resolve("nus-wide-tc21", root, path, "nus-wide")
    file = where if where.is_file() else where / TC21_FILE
    spec = {k: (file, v) for k, v in TC21_KEYS.items()}
    return load_spec("nus-wide-tc21", spec, protocol=protocol, seed=seed, n_query=n_query, n_train=n_train,
                     n_validation=n_validation, cache=cache, cache_dir=cache_dir)


@register("nus-wide-tc10")
def load_tc10(
    root=None, path=None, *, protocol: str = "dcmh", seed: int = 0, n_query: int = 2100, n_train: int = 10500,
    n_validation: int = 0, image_path=None, cache: bool | None = None, cache_dir=None,
) -> CrossModalData:
    """Return NUS-WIDE TC-10 (split files) under the DCMH protocol."""
    where = resolve("nus-wide-tc10", root, path, "nus-wide")
    spec = _tc10_spec(where if where.is_dir() else where.parent, image_path)
    return load_spec("nus-wide-tc10", spec, protocol=protocol, seed=seed, n_query=n_query, n_train=n_train,
                     n_validation=n_validation, cache=cache, cache_dir=cache_dir)
