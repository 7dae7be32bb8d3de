"""Evaluate saved codes or features without training: python -m runners.evaluate --help.

Reads query/retrieval codes and labels from .npy, .npz or .mat (MATLAB v5 via scipy, v7.3 via
h5py), prints the standard numbers of metrics.evaluate_hashing (or, with --cosine, the ranking
metrics of real-valued embeddings). Caption retrieval (--image-feats / --text-feats): Chinese-CLIP
feature jsonl files with their texts jsonl, or SCAN-style .npy embeddings (5 captions per image,
N or 5N image rows), give Recall@1/5/10 both ways in percent, the mean recall per direction, medr,
meanr and rsum, as SCAN's evaluation prints them (metrics.recall). Errors are one line on stderr
and exit status 2, before anything is computed (an unusable --device, an empty, truncated or
non-archive file). Nothing is ever unpickled: object arrays are refused.

A metric that is undefined for the query set (HashNet's mAP@k drops the queries with no relevant
item in their top k; when it drops every query, e.g. all query labels zero, nothing is left to
average) prints as "undefined" in the table and as null in --json, with a note on stderr; NaN is
never printed.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import zipfile
from pathlib import Path

import numpy as np

ROLES = ("query_codes", "retrieval_codes", "query_labels", "retrieval_labels")
# Key names accepted for each role inside one .npz/.mat file, first match wins.
ALIASES = {
    "query_codes": ("query_codes", "qB", "query_code", "q_codes"),
    "retrieval_codes": ("retrieval_codes", "rB", "retrieval_code", "db_codes", "database_codes", "r_codes"),
    "query_labels": ("query_labels", "qL", "query_L", "query_label", "q_labels"),
    "retrieval_labels": ("retrieval_labels", "rL", "retrieval_L", "retrieval_label", "db_labels", "database_labels", "r_labels"),
}


def load_arrays(path: str) -> dict[str, np.ndarray]:
    """Return every array in a .npy (key 'array'), .npz or .mat file, rows as items."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = file.suffix.lower()
    if suffix in (".npy", ".npz"):
        return _load_numpy(file, suffix)
    if suffix == ".mat":
        import scipy.io

        try:
            content = scipy.io.loadmat(file)
            return {k: v for k, v in content.items() if not k.startswith("__") and isinstance(v, np.ndarray)}
        except NotImplementedError:  # MATLAB v7.3 is HDF5; h5py sees the transposed layout
            import h5py

            with h5py.File(file, "r") as handle:
                return {k: np.asarray(v).T for k, v in handle.items() if isinstance(v, h5py.Dataset)}
    raise ValueError(f"{path}: unsupported file type {suffix!r}; expected .npy, .npz or .mat")


def _load_numpy(file: Path, suffix: str) -> dict[str, np.ndarray]:
    """Read a .npy or .npz without ever unpickling; ValueError naming the file if it is empty,
    truncated, not what its name says, or holds object arrays."""
    what = {".npy": "a .npy array file (numpy.save)", ".npz": "a .npz archive (numpy.savez)"}[suffix]
    size = file.stat().st_size
    with open(file, "rb") as handle:
        head = handle.read(8)
    if size == 0:
        raise ValueError(f"{file}: empty file (0 bytes); expected {what}")
    magic = b"\x93NUMPY" if suffix == ".npy" else b"PK"
    if not head.startswith(magic):
        raise ValueError(f"{file}: not {what} (first bytes {head!r}, expected {magic!r}); the file is corrupt or of another kind")
    try:
        if suffix == ".npy":
            return {"array": np.load(file, allow_pickle=False)}
        with np.load(file, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickled" in str(exc) or "Object arrays" in str(exc):
            raise ValueError(f"{file}: holds object (pickled) data; only numeric arrays are read, never pickles") from None
        raise ValueError(f"{file}: truncated or corrupt ({str(exc).splitlines()[0]}); expected {what}") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as exc:
        raise ValueError(f"{file}: truncated or corrupt ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no data'}); "
                         f"expected {what}") from None


def pick(arrays: dict[str, np.ndarray], source: str, role: str, key: str | None) -> np.ndarray:
    """Return the array for `role`: the named key, the file's only array, or a known alias."""
    if key is not None:
        if key not in arrays:
            raise ValueError(f"{source}: no key {key!r} for {role}; keys present: {sorted(arrays)}")
        return arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    for name in ALIASES[role]:
        if name in arrays:
            return arrays[name]
    raise ValueError(f"{source}: cannot tell which array is {role}; name it as FILE:KEY (keys present: {sorted(arrays)})")


def split_source(spec: str) -> tuple[str, str | None]:
    """'file.npz:key' -> ('file.npz', 'key'); a plain path has no key."""
    head, sep, tail = spec.rpartition(":")
    if sep and Path(head).suffix.lower() in (".npy", ".npz", ".mat"):
        return head, tail
    return spec, None


def gather_inputs(args: argparse.Namespace) -> dict[str, np.ndarray]:
    inputs, cache = {}, {}
    for role in ROLES:
        spec = getattr(args, role) or args.file
        if spec is None:
            raise ValueError(f"no source for {role}: give FILE or --{role.replace('_', '-')}")
        path, key = split_source(spec)
        if path not in cache:
            cache[path] = load_arrays(path)
        inputs[role] = pick(cache[path], path, role, key)
    for role in ("query_labels", "retrieval_labels"):
        labels = inputs[role]
        if labels.ndim == 2 and 1 in labels.shape and labels.shape[0] == 1:
            inputs[role] = labels.ravel()  # MATLAB stores a class-id vector as 1 x n
    return inputs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runners.evaluate",
        description="Evaluate saved binary codes (or real-valued embeddings with --cosine) for one retrieval "
                    "direction: mAP@all (stable and tie-aware), mAP@k variants, P@k, precision within a Hamming radius.",
        epilog="Examples:\n"
               "  python -m runners.evaluate codes.npz          (keys query_codes, retrieval_codes, query_labels, retrieval_labels)\n"
               "  python -m runners.evaluate --query-codes qB.npy --retrieval-codes rB.npy \\\n"
               "      --query-labels data.mat:LAll_query --retrieval-labels data.mat:LAll_db --json\n"
               "  python -m runners.evaluate --image-feats valid_imgs.img_feat.jsonl --text-feats valid_texts.txt_feat.jsonl \\\n"
               "      --texts valid_texts.jsonl                   (Chinese-CLIP features: Recall@K both ways)\n"
               "  python -m runners.evaluate --image-feats img_embs.npy --text-feats cap_embs.npy --folds 5   (SCAN, MS-COCO 1K)\n"
               "Codes: ±1 or 0/1 (add --binarize for real values: sign with 0 -> +1). Labels: multi-hot rows or 1-D class ids.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", nargs="?", help="one .npz/.mat holding all four arrays (known key names, see --help)")
    cap = parser.add_argument_group("caption retrieval (Recall@K, medr, meanr, rsum; instead of the code arguments)")
    cap.add_argument("--image-feats", metavar="FILE", help="image features: Chinese-CLIP .jsonl ({image_id, feature} per line) "
                     "or .npy (N rows, or 5N rows with each image repeated per caption, SCAN's layout)")
    cap.add_argument("--text-feats", metavar="FILE", help="text features: Chinese-CLIP .jsonl ({text_id, feature}) or .npy (one row per caption)")
    cap.add_argument("--texts", metavar="JSONL", help="ground truth for .jsonl features: {text_id, image_ids} per line (<split>_texts.jsonl)")
    cap.add_argument("--captions-per-image", type=int, default=5, metavar="K",
                     help=".npy features: caption j describes image j // K (default: %(default)s)")
    cap.add_argument("--folds", type=int, default=None, metavar="N", help="average over N folds of --fold-size images (MS-COCO 1K: 5)")
    cap.add_argument("--fold-size", type=int, default=1000, metavar="M", help="images per fold (default: %(default)s)")
    cap.add_argument("--score", choices=("dot", "cosine", "hamming"), default="dot",
                     help="similarity: inner product (default; SCAN's and Chinese-CLIP's), cosine, or hamming for ±1/0-1 codes")
    cap.add_argument("--ties", choices=("first", "last"), default="first",
                     help="equal scores: earlier gallery row first (default; Chinese-CLIP's stable sort) or later (SCAN's reversed stable argsort)")
    for role in ROLES:
        parser.add_argument(f"--{role.replace('_', '-')}", dest=role, metavar="FILE[:KEY]",
                            help=f"{role.replace('_', ' ')} from .npy/.npz/.mat (overrides FILE)")
    parser.add_argument("--map-k", type=int, nargs="+", default=[50, 1000, 5000], metavar="K", help="cutoffs for mAP@k (default: 50 1000 5000)")
    parser.add_argument("--precision-k", type=int, nargs="+", default=[10, 100, 1000], metavar="K", help="cutoffs for P@k (default: 10 100 1000)")
    parser.add_argument("--radius", type=int, default=2, help="Hamming radius for precision within the ball (default: 2)")
    parser.add_argument("--permutation-seed", type=int, default=None, help="shuffle the database with this seed first (MATLAB protocol)")
    parser.add_argument("--binarize", action="store_true", help="turn real-valued codes into ±1 (value >= 0 -> +1)")
    parser.add_argument("--cosine", action="store_true", help="real-valued embeddings ranked by cosine similarity")
    parser.add_argument("--device", default="cpu", help="torch device to evaluate on (default: cpu)")
    parser.add_argument("--chunk-size", type=int, default=None, help="queries per chunk (default: ~1M pairs per chunk)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


def caption_inputs(args: argparse.Namespace):
    """Return (image rows, text rows, text -> image indptr, images, layout note) of the caption files."""
    from datasets.clip_jsonl import read_paired
    from datasets.scan import detect_layout

    image_path, text_path = Path(args.image_feats), Path(args.text_feats or "")
    if args.text_feats is None:
        raise ValueError("--image-feats needs --text-feats")
    if image_path.suffix == ".jsonl" or text_path.suffix == ".jsonl":
        if args.texts is None:
            raise ValueError(f"{text_path}: jsonl features need their ground truth, --texts <split>_texts.jsonl")
        split = read_paired(image_path, text_path, Path(args.texts))
        return split.image, split.text, split.pairing.indptr, split.pairing.images, f"{split.n_images} images, {split.n_texts} texts"
    arrays = {}
    for name, path in (("image", image_path), ("text", text_path)):
        found = load_arrays(str(path))
        if len(found) != 1:
            raise ValueError(f"{path}: holds {len(found)} arrays; expected one (items x dims)")
        arr = np.asarray(next(iter(found.values())))
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{path}: shape {arr.shape}, dtype {arr.dtype}; expected a numeric (items x dims) array")
        arrays[name] = arr
    if args.captions_per_image < 1:
        raise ValueError(f"--captions-per-image {args.captions_per_image}; expected a positive integer")
    images, k, layout = detect_layout(arrays["image"], len(arrays["text"]), args.captions_per_image, image_path, text_path)
    n_texts = len(arrays["text"])
    return images, arrays["text"], np.arange(n_texts + 1, dtype=np.int64), np.arange(n_texts, dtype=np.int64) // k, layout


def caption_evaluate(args: argparse.Namespace) -> dict[str, float | str]:
    """Return the caption numbers (percent recalls, medr, meanr, rsum) of --image-feats / --text-feats."""
    from metrics.recall import caption_retrieval, caption_retrieval_folds, flat_caption_values

    image, text, indptr, images, layout = caption_inputs(args)
    common = dict(metric=args.score, ties=args.ties, chunk_size=args.chunk_size)
    if args.folds:
        result = caption_retrieval_folds(image, text, indptr, images, n_folds=args.folds, fold_size=args.fold_size, **common)
    else:
        result = caption_retrieval(image, text, indptr, images, **common)
    return {**flat_caption_values(result), "image_layout": layout}


def evaluate(args: argparse.Namespace) -> dict[str, float]:
    import torch

    import metrics

    if args.image_feats is not None or args.text_feats is not None:
        if args.image_feats is None:
            raise ValueError("--text-feats needs --image-feats")
        return caption_evaluate(args)

    arrays = gather_inputs(args)
    device = torch.device(args.device)
    tensors = {}
    for role, array in arrays.items():
        if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
            raise ValueError(f"{role} must be numeric, got dtype {array.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if role.endswith("codes") and args.binarize:
            tensor = metrics.binarize(tensor)
        tensors[role] = tensor.to(device)
    if args.cosine:
        common = dict(chunk_size=args.chunk_size, permutation_seed=args.permutation_seed, metric="cosine")
        n_retrieval = tensors["retrieval_codes"].shape[0]
        out = {"map": float(metrics.mean_average_precision(*tensors.values(), **common))}
        for k in sorted(k for k in set(args.map_k) if k <= n_retrieval):
            for variant in metrics.MAP_AT_K_VARIANTS:
                out[f"map_at_{k}_{variant}"] = float(metrics.mean_average_precision_at_k(*tensors.values(), k, variant=variant, **common))
        ks = sorted(k for k in set(args.precision_k) if k <= n_retrieval)
        if ks:
            out |= {f"p_at_{k}": float(v) for k, v in zip(ks, metrics.precision_at_k(*tensors.values(), ks, **common))}
        return out
    return metrics.evaluate_hashing(*tensors.values(), map_ks=args.map_k, precision_ks=args.precision_k, radius=args.radius,
                                    permutation_seed=args.permutation_seed, chunk_size=args.chunk_size)


def undefined_note(name: str) -> str:
    """Return why metric `name` has no value for this query set."""
    if "_hashnet" in name:
        return (f"note: {name} is undefined for this query set: HashNet's variant leaves out every query with no "
                "relevant item in its top k, and here that is every query (are the query labels all zero?)")
    return f"note: {name} is undefined for this query set (no query it can be computed for)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from .suite import check_device

        check_device(args.device, "--device")
        results = evaluate(args)
    except (ValueError, OSError, KeyError, RuntimeError) as error:  # DataError is a ValueError
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "codes must contain only" in message and not (args.binarize or args.cosine):
            message += " (real-valued codes: add --binarize, or --cosine for embeddings)"
        print(f"error: {message}", file=sys.stderr)
        return 2
    undefined = [name for name, value in results.items() if isinstance(value, float) and not math.isfinite(value)]
    for name in undefined:
        print(undefined_note(name), file=sys.stderr)
    if args.json:  # strict JSON: an undefined value is null, never NaN
        print(json.dumps({k: (None if k in undefined else v) for k, v in results.items()}, allow_nan=False))
    else:
        width = max(map(len, results))
        for name, value in results.items():
            text = "undefined" if name in undefined else f"{value:.6f}" if isinstance(value, float) else value
            print(f"{name:<{width}}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
