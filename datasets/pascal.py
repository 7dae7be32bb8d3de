"""Pascal Sentences in DSCMR's (CVPR 2019) release: VGG-19 fc7 image features (4096-d),
300-d sentence features, class ids 0..19.

DSCMR ships one .mat per variable (`train_img.mat` with key `train_img`, `train_txt.mat`,
`train_img_lab.mat`, `test_img.mat`, ...); a single .mat holding all these keys works too.
Optional validation parts: `val_*` or `valid_*`. Pool order: train, [val], test.
Protocol `dscmr`: train = train part, query = retrieval = test part (DSCMR evaluates the test
set against itself), validation = the shipped val part, else n_validation carved from train.
"""
from __future__ import annotations

from pathlib import Path

from .container import CrossModalData, DataError
from .generic import read_parts
from .paths import resolve
from .protocols import build_pool, make_data
from .registry import register

FIELDS = {"image": "img", "text": "txt", "labels": "img_lab"}


def _locate(where: Path, part: str) -> dict | None:
    """Return {field: (file, [key])} for one part, or None if that part is absent."""
    out = {}
    for field, suffix in FIELDS.items():
        key = f"{part}_{suffix}"
        if where.is_file():
            out[field] = (where, [key])
        elif (where / f"{key}.mat").exists():
            out[field] = (where / f"{key}.mat", [key])
        elif (where / "pascal.mat").exists():
            out[field] = (where / "pascal.mat", [key])
        else:
            return None
    return out


@register("pascal-sentences")
def load_pascal(
    root=None, path=None, *, protocol: str = "dscmr", seed: int = 0, n_validation: int = 0,
) -> CrossModalData:
    """Return Pascal Sentences (DSCMR features) under the `dscmr` protocol; labels one-hot (20)."""
    where = resolve("pascal-sentences", root, path, "pascal-sentences")
    parts = {}
    for part, names in (("train", ("train",)), ("val", ("val", "valid")), ("test", ("test",))):
        for name in names:
            spec = _locate(where, name)
            if spec is not None and (not where.is_file() or _has(where, f"{name}_img")):
                parts[part] = spec
                break
    for need in ("train", "test"):
        if need not in parts:
            raise DataError(
                f"pascal-sentences: no {need} part under {where}; expected DSCMR's {need}_img.mat, "
                f"{need}_txt.mat and {need}_img_lab.mat (keys {need}_img, {need}_txt, {need}_img_lab)"
            )
    arrays, groups, sources, info = read_parts(parts)
    pool = build_pool("pascal-sentences", arrays["image"], arrays["text"], arrays["labels"], sources,
                      groups=groups, label_base=0, num_classes=20,
                      info={**info, "pool_order": "train, [val], test rows"})
    return make_data(pool, protocol, seed, n_validation=n_validation, allowed=("dscmr",))


def _has(file: Path, key: str) -> bool:
    from .mat import ArrayFile

    with ArrayFile(file) as f:
        return key in f
