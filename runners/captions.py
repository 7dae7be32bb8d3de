"""Caption-retrieval numbers of a caption-paired Split (the glue between datasets and metrics.recall).

Names (all recalls in percent, as SCAN and Chinese-CLIP print them): recall_at_{1,5,10}_{i2t,t2i},
mean_recall_{i2t,t2i} (the mean of R@1/5/10 of one direction: SCAN's ar / ari, Chinese-CLIP's
"mean_recall"), medr_{dir} and meanr_{dir} (1-based ranks), rsum (the six recalls summed). When
the data set asks for folds (meta.info['eval_folds'], MS-COCO 1K), these are the means over folds
and the whole split's numbers follow under the same names with '_full' before the direction.
i2t queries are the images some text describes; t2i queries every text; galleries hold every
item of the split (distractor images too).
"""
from __future__ import annotations

from typing import Any, Mapping

from datasets import Split
from metrics.recall import caption_retrieval, caption_retrieval_folds, flat_caption_values


def split_caption_values(image, text, split: Split, *, metric: str = "hamming", ties: str = "first",
                         folds: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Return the flat caption numbers of `split` given its image and text rows' codes or features."""
    if split.pairing is None:
        raise ValueError(f"split {split.name!r} has labels, not a caption pairing")
    p = split.pairing
    full = caption_retrieval(image, text, p.indptr, p.images, metric=metric, ties=ties)
    if not folds:
        return flat_caption_values(full)
    folded = caption_retrieval_folds(image, text, p.indptr, p.images, metric=metric, ties=ties,
                                     n_folds=int(folds["n_folds"]), fold_size=int(folds["fold_size"]))
    return flat_caption_values(folded) | flat_caption_values(full, "_full")


def caption_values(image, text, data, metric: str = "hamming") -> dict[str, float]:
    """Return the caption numbers of a trained encoder's query-split codes (Hamming ranking) or
    embeddings (metric='cosine': names get '_cosine' before the direction), ties by gallery order,
    folded when the data set's protocol asks for it."""
    values = split_caption_values(image, text, data.query, metric=metric, ties="first",
                                  folds=data.meta.info.get("eval_folds"))
    if metric == "hamming":
        return values
    return {(k[:-4] + f"_{metric}" + k[-4:] if k.endswith(("_i2t", "_t2i")) else f"{k}_{metric}"): v for k, v in values.items()}


def format_values(values: Mapping[str, float]) -> str:
    """Return the numbers as SCAN prints them: one line per direction and rsum."""
    lines = []
    for direction, title in (("i2t", "Image to text"), ("t2i", "Text to image")):
        keys = [f"recall_at_{k}_{direction}" for k in (1, 5, 10)] + [f"medr_{direction}", f"meanr_{direction}"]
        if all(k in values for k in keys):
            lines.append(f"{title}: " + " ".join(f"{values[k]:.1f}" for k in keys)
                         + f"  (R@1 R@5 R@10 medr meanr; mean recall {values[f'mean_recall_{direction}']:.2f})")
    if "rsum" in values:
        lines.append(f"rsum: {values['rsum']:.1f}")
    return "\n".join(lines)

