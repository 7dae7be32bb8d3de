"""Model selection on the validation split only (never the query set).

The public repos of DSCMR and SSAH pick the best epoch on the test queries; here the
validation split (ctx.validation, carved from the training side) plays that role. One score
serves the stopping rule (methods.training) and the tuning objective (runners.tune): the mean
of image->text and text->image mAP@all with the validation items retrieving among themselves,
under the split's own relevance (labels, or a caption pairing with different numbers of images
and texts).
"""
from __future__ import annotations

import torch

from metrics import mean_average_precision

from .base import Encoder
from datasets import Split


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
