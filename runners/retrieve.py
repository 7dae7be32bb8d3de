"""Chinese-CLIP's retrieval pipeline on its feature files: top-k predictions and Recall@K.

    python -m runners.retrieve --image-feats valid_imgs.img_feat.jsonl --text-feats valid_texts.txt_feat.jsonl \\
        --texts valid_texts.jsonl --output-dir out/

reads the feature jsonl files (extract_features.py's layout, or datasets.clip_features'), writes
`<split>_predictions.jsonl` (text -> image: {"text_id": ..., "image_ids": [top k]}, one line per
text of the text-feature file, make_topk_predictions.py's format) and `<split>_tr_predictions.jsonl`
(image -> text: {"image_id": ..., "text_ids": [...]}, one line per image of the image-feature
file, make_topk_predictions_tr.py's), and with the ground truth (--texts) the scores in
evaluation.py's output.json shape: `output.json` (text -> image) and `output_tr.json` (image ->
text), plus SCAN's medr / meanr and rsum on stdout. <split> is the image-feature file's name
before `_imgs`.

Same semantics as Chinese-CLIP's scripts (metrics.recall): scores are inner products of the
features as written (`--metric cosine` normalises first), ties go to the row earlier in the
gallery file (Python's stable sort, as theirs), ids are written as read (Chinese-CLIP's own
evaluation.py accepts only integer ids). Image -> text queries for the scores are the images
some text names (transform_ir_annotation_to_tr.py's .tr.jsonl); `--tr-annotation` writes that file.
Errors are one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from datasets import DataError
from datasets.captions import IdIndex, jsonl_records
from datasets.clip_jsonl import read_annotation, read_features, read_paired
from metrics.recall import METRICS, TIES, caption_retrieval, clip_output, flat_caption_values, top_k

DIRECTIONS = {"t2i": ("text_id", "image_ids"), "i2t": ("image_id", "text_ids")}


def write_predictions(path: Path, query_ids: Sequence[Any], gallery_ids: Sequence[Any], rows: np.ndarray, direction: str) -> int:
    """Write one JSON line per query: {query key: id, gallery key: [ids of rows, best first]};
    return the number of lines."""
    qkey, gkey = DIRECTIONS[direction]
    gallery = list(gallery_ids)
    with open(path, "w", encoding="utf-8") as out:
        for qid, ranked in zip(query_ids, rows):
            out.write(json.dumps({qkey: _plain(qid), gkey: [_plain(gallery[j]) for j in ranked]}, ensure_ascii=False) + "\n")
    return len(rows)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def read_predictions(path: Path, direction: str, k: int | None = None) -> dict[Any, list]:
    """Return {query id: [gallery ids]} from a predictions jsonl, checked as evaluation.py checks
    a submission: the keys present, a list of exactly k ids (when k is given), no repeated id in
    a list, no query twice; errors name the file and line."""
    qkey, gkey = DIRECTIONS[direction]
    seen = IdIndex(Path(path), qkey)
    out: dict[Any, list] = {}
    for lineno, obj in jsonl_records(Path(path), (qkey, gkey), "a top-k predictions jsonl"):
        seen.add(obj[qkey], lineno)
        ids = obj[gkey]
        if not isinstance(ids, list):
            raise DataError(f"{path}: line {lineno} has {gkey} {ids!r}; expected a list")
        if k is not None and len(ids) != k:
            raise DataError(f"{path}: line {lineno} has {len(ids)} {gkey}; expected {k}")
        if len(set(map(repr, ids))) != len(ids):
            raise DataError(f"{path}: line {lineno} repeats an id in {gkey}; expected distinct predictions")
        out[obj[qkey]] = ids
    return out


def tr_annotation(text_ids: Sequence[Any], image_ids_of_text: Sequence[Sequence[Any]]) -> dict[Any, list]:
    """Return {image_id: [text_ids]} as transform_ir_annotation_to_tr.py builds it: images in the
    order they are first named, texts in file order."""
    out: dict[Any, list] = {}
    for t, images in zip(text_ids, image_ids_of_text):
        for image_id in images:
            out.setdefault(image_id, []).append(t)
    return out


def split_name(image_feats: Path) -> str:
    """Return the split prefix of `<split>_imgs.img_feat.jsonl` (else the file's stem)."""
    name = Path(image_feats).name
    return name.split("_imgs")[0] if "_imgs" in name else name.split(".")[0]


def retrieve(image_feats: Path, text_feats: Path, texts: Path | None = None, *, top: int = 10, metric: str = "dot",
             ties: str = "first", output_dir: Path | None = None, t2i_output: Path | None = None,
             i2t_output: Path | None = None, tr_annotation_output: Path | None = None) -> dict[str, Any]:
    """Run the pipeline; return {'files': {what: path}, 'scores': {'t2i': output.json dict, 'i2t': ...},
    'values': flat caption numbers} (scores and values only with the ground truth `texts`)."""
    image_feats, text_feats = Path(image_feats), Path(text_feats)
    img_ids, img = read_features(image_feats, "image_id")
    txt_ids, txt = read_features(text_feats, "text_id")
    if img.shape[1] != txt.shape[1]:
        raise DataError(f"{image_feats} has {img.shape[1]}-d features but {text_feats} has {txt.shape[1]}-d; expected one width")
    folder = Path(output_dir) if output_dir is not None else text_feats.parent
    split = split_name(image_feats)
    t2i_path = Path(t2i_output) if t2i_output else folder / f"{split}_predictions.jsonl"
    i2t_path = Path(i2t_output) if i2t_output else folder / f"{split}_tr_predictions.jsonl"
    for p in (t2i_path, i2t_path):
        p.parent.mkdir(parents=True, exist_ok=True)
    files = {"t2i_predictions": t2i_path, "i2t_predictions": i2t_path}
    write_predictions(t2i_path, txt_ids.ids, img_ids.ids, top_k(txt, img, top, metric=metric, ties=ties), "t2i")
    write_predictions(i2t_path, img_ids.ids, txt_ids.ids, top_k(img, txt, top, metric=metric, ties=ties), "i2t")
    result: dict[str, Any] = {"files": files}
    if texts is None:
        return result
    paired = read_paired(image_feats, text_feats, texts, split)
    p = paired.pairing
    numbers = caption_retrieval(paired.image, paired.text, p.indptr, p.images, metric=metric, ties=ties, return_ranks=True)
    result["scores"] = {d: clip_output(numbers["ranks"][d][1]) for d in ("t2i", "i2t")}
    result["values"] = flat_caption_values(numbers)
    score_t2i, score_i2t = folder / "output.json", folder / "output_tr.json"
    for path, direction in ((score_t2i, "t2i"), (score_i2t, "i2t")):
        path.write_text(json.dumps(result["scores"][direction]), encoding="utf-8")
    files.update({"t2i_scores": score_t2i, "i2t_scores": score_i2t})
    if tr_annotation_output is not None:
        ann_ids, ann_images, _ = read_annotation(Path(texts))
        with open(tr_annotation_output, "w", encoding="utf-8") as out:
            for image_id, text_list in tr_annotation(ann_ids.ids, ann_images).items():
                out.write(json.dumps({"image_id": image_id, "text_ids": text_list}, ensure_ascii=False) + "\n")
        files["tr_annotation"] = Path(tr_annotation_output)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runners.retrieve", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("--image-feats", required=True, metavar="JSONL", help="image features: one {\"image_id\", \"feature\"} per line")
    parser.add_argument("--text-feats", required=True, metavar="JSONL", help="text features: one {\"text_id\", \"feature\"} per line")
    parser.add_argument("--texts", metavar="JSONL", help="ground truth: {\"text_id\", \"text\", \"image_ids\"} per line; "
                        "with it the scores are computed and written (output.json, output_tr.json)")
    parser.add_argument("--top-k", type=int, default=10, help="predictions per query (default: %(default)s, what evaluation.py reads)")
    parser.add_argument("--metric", choices=METRICS, default="dot",
                        help="score: inner product as written (default, Chinese-CLIP's), cosine, or hamming for ±1 codes")
    parser.add_argument("--ties", choices=TIES, default="first",
                        help="equal scores: the earlier gallery row first (default, Chinese-CLIP's stable sort) or the later one")
    parser.add_argument("--output-dir", metavar="DIR", help="where the predictions and scores go (default: the text features' folder)")
    parser.add_argument("--t2i-output", metavar="JSONL", help="text -> image predictions path (default: DIR/<split>_predictions.jsonl)")
    parser.add_argument("--i2t-output", metavar="JSONL", help="image -> text predictions path (default: DIR/<split>_tr_predictions.jsonl)")
    parser.add_argument("--tr-annotation", metavar="JSONL", help="also write the image -> text ground truth (<split>_texts.tr.jsonl) here")
    parser.add_argument("--json", action="store_true", help="print one JSON object (files, scores, numbers) instead of text")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.exit(2, f"error: --top-k {args.top_k}; expected a positive integer\n")
    try:
        result = retrieve(args.image_feats, args.text_feats, args.texts, top=args.top_k, metric=args.metric, ties=args.ties,
                          output_dir=args.output_dir, t2i_output=args.t2i_output, i2t_output=args.i2t_output,
                          tr_annotation_output=args.tr_annotation)
    except (DataError, ValueError, OSError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"files": {k: str(v) for k, v in result["files"].items()}, "scores": result.get("scores"),
                          "values": result.get("values")}))
        return 0
    for what, path in result["files"].items():
        print(f"{what}: {path}")
    if "scores" in result:
        from .captions import format_values

        for direction, title in (("t2i", "text -> image"), ("i2t", "image -> text")):
            print(f"{title}: {json.dumps(result['scores'][direction])}")
        print(format_values(result["values"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
