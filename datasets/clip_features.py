"""Chinese-CLIP feature extraction from a local checkpoint, writing its feature jsonl layout.

    python -m datasets.clip_features --checkpoint clip_cn_vit-b-16.pt --vision-model ViT-B-16 \\
        --text-model RoBERTa-wwm-ext-base-chinese --images valid_imgs.tsv --texts valid_texts.jsonl

writes `valid_imgs.img_feat.jsonl` ({"image_id", "feature"} per line) and
`valid_texts.txt_feat.jsonl` ({"text_id", "feature"}) beside the inputs (or --image-output /
--text-output), L2-normalised, as cn_clip's
eval/extract_features.py does, so datasets.clip_jsonl and runners.retrieve read them.
Nothing is downloaded: the checkpoint is a local file ({"state_dict": ...} as Chinese-CLIP saves
it, or a bare state dict); a missing or unfitting one is a one-line error.

The model is cn_clip's own CLIP class (PyPI `cn_clip`, an optional extra: `pip install --no-deps
cn_clip six`), built from its model_configs/<vision>.json + <text>.json (or one --model-config
JSON with the same keys, e.g. a small test model), weights cast as its `convert_weights` does,
then run in float32 (extract_features' "fp32"/"amp" precision). Images: a Chinese-CLIP
`<split>_imgs.tsv` (id<TAB>urlsafe-base64 per line) or a folder of image files (id = file stem);
ids that are all digits become ints, as Chinese-CLIP's LMDB reader makes them. Preprocessing is
its image_transform, done with Pillow + numpy (torchvision's PyPI wheels link the CUDA build
of torch, so they cannot load beside a CPU torch): resize to resolution x resolution with
BICUBIC, convert to RGB, scale to [0, 1], normalise with CLIP's mean / std. Texts: each
`text` lower-cased with curly quotes straightened (its _preprocess_text), BERT-tokenised with its
vocabulary, [CLS] ... [SEP] cut to --context-length (52) and zero-padded. torch and cn_clip are
imported only here, inside the functions.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import types
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .captions import jsonl_records, text_lines
from .container import DataError

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
VISION_MODELS = ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336", "ViT-H-14", "RN50")
TEXT_MODELS = ("RoBERTa-wwm-ext-base-chinese", "RoBERTa-wwm-ext-large-chinese", "RBT3-chinese")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def cn_clip_modules() -> tuple[Any, Any, Path]:
    """Return (cn_clip.clip.model module, its tokenizer, its model_configs folder).

    cn_clip/clip/__init__.py imports torchvision for its image_transform; where torchvision
    cannot load (a CPU torch beside PyPI's CUDA-linked torchvision, or none installed) the model
    and tokenizer modules are loaded without that __init__, which they do not need."""
    try:
        import cn_clip
    except ImportError:
        raise DataError("cn_clip is not installed; `pip install --no-deps cn_clip six` (the model code; "
                        "its other requirements are not needed here)") from None
    folder = Path(cn_clip.__file__).parent / "clip"
    try:
        from cn_clip.clip import _tokenizer, model
    except (ImportError, RuntimeError, OSError):
        package = types.ModuleType("cn_clip.clip")
        package.__path__ = [str(folder)]
        sys.modules["cn_clip.clip"] = package
        from cn_clip.clip.bert_tokenizer import FullTokenizer

        package._tokenizer = FullTokenizer()
        from cn_clip.clip import model

        _tokenizer = package._tokenizer
    return model, _tokenizer, folder / "model_configs"


def model_info(vision_model: str, text_model: str, model_config: str | Path | None = None) -> dict[str, Any]:
    """Return the CLIP(**info) arguments: cn_clip's <vision>.json merged with <text>.json, or one JSON file."""
    _, _, configs = cn_clip_modules()
    if model_config is not None:
        path = Path(model_config)
        if not path.is_file():
            raise DataError(f"{path}: model config not found; expected a JSON object of cn_clip CLIP arguments")
        info = json.loads(path.read_text(encoding="utf-8"))
    else:
        info = {}
        for name, known in ((vision_model, VISION_MODELS), (text_model, TEXT_MODELS)):
            path = configs / f"{name.replace('/', '-')}.json"
            if not path.is_file():
                raise DataError(f"cn_clip has no model config {name!r} ({path}); expected one of {list(known)}")
            info.update(json.loads(path.read_text(encoding="utf-8")))
    if isinstance(info.get("vision_layers"), str):  # "[3,4,6,3]" for ResNets, as cn_clip writes it
        info["vision_layers"] = json.loads(info["vision_layers"])
    return info


def load_model(checkpoint: str | Path, vision_model: str = "ViT-B-16", text_model: str = "RoBERTa-wwm-ext-base-chinese",
               model_config: str | Path | None = None, device: str = "cpu"):
    """Return (CLIP model in eval mode, float32, on `device`; its image resolution) with the
    weights of a local checkpoint (nothing is downloaded)."""
    import torch

    path = Path(checkpoint)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found; expected a local Chinese-CLIP .pt file (nothing is downloaded)")
    module, tokenizer, _ = cn_clip_modules()
    info = model_info(vision_model, text_model, model_config)
    try:
        model = module.CLIP(**info, tokenizer=tokenizer)
    except TypeError as exc:
        raise DataError(f"model config for {vision_model}@{text_model}: {exc}") from None
    module.convert_weights(model)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file or pickled objects beyond tensors
        raise DataError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    sd = state.get("state_dict", state) if isinstance(state, dict) else None
    if not isinstance(sd, dict) or not sd:
        raise DataError(f"{path}: no state dict; expected {{'state_dict': ...}} as Chinese-CLIP saves checkpoints")
    if next(iter(sd)).startswith("module"):
        sd = {k[len("module."):]: v for k, v in sd.items() if "bert.pooler" not in k}
    try:
        model.load_state_dict(sd)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise DataError(f"{path}: weights do not fit {vision_model}@{text_model} ({detail})") from None
    model = model.float().to(device).eval()
    return model, int(info["image_resolution"])


def parse_id(text: str) -> int | str:
    """Return an id as Chinese-CLIP's readers make it: an int when all digits, else the string."""
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else text


def iter_images(source: str | Path) -> Iterator[tuple[Any, Any]]:
    """Yield (image id, PIL image) from a Chinese-CLIP `*_imgs.tsv` or a folder of image files."""
    from PIL import Image, UnidentifiedImageError

    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{source}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        for f in files:
            try:
                img = Image.open(f)
                img.load()
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"{f}: not a readable image ({exc})") from None
            yield parse_id(f.stem), img
        return
    for lineno, _, line in text_lines(source, "Chinese-CLIP images tsv: id<TAB>base64 per line"):
        if not line.strip():
            continue
        image_id, sep, b64 = line.partition("\t")
        if not sep:
            raise DataError(f"{source}: line {lineno} has no tab; expected 'id<TAB>base64 image'")
        try:
            img = Image.open(io.BytesIO(base64.urlsafe_b64decode(b64.strip())))
            img.load()
        except (ValueError, UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{source}: line {lineno} (id {image_id!r}) is not a base64 image ({exc})") from None
        yield parse_id(image_id), img


def preprocess(image, resolution: int) -> np.ndarray:
    """Return cn_clip's image_transform of a PIL image as a (3, r, r) float32 array."""
    from PIL import Image

    img = image.resize((resolution, resolution), Image.Resampling.BICUBIC).convert("RGB")
    x = np.asarray(img, dtype=np.float32) / 255.0
    return ((x - np.asarray(MEAN, dtype=np.float32)) / np.asarray(STD, dtype=np.float32)).transpose(2, 0, 1)


def tokenize(texts: Sequence[str], context_length: int = 52) -> np.ndarray:
    """Return (n, context_length) int64 token ids as cn_clip.clip.tokenize builds them."""
    _, tok, _ = cn_clip_modules()
    if context_length < 2:
        raise DataError(f"context_length = {context_length}; expected >= 2 ([CLS] and [SEP])")
    out = np.zeros((len(texts), context_length), dtype=np.int64)
    for i, text in enumerate(texts):
        text = str(text).lower().replace("\u201c", '"').replace("\u201d", '"')
        ids = [tok.vocab["[CLS]"]] + tok.convert_tokens_to_ids(tok.tokenize(text))[: context_length - 2] + [tok.vocab["[SEP]"]]
        out[i, : len(ids)] = ids
    return out


def extract_features(checkpoint: str | Path, *, images: str | Path | None = None, texts: str | Path | None = None,
                     image_output: str | Path | None = None, text_output: str | Path | None = None,
                     vision_model: str = "ViT-B-16", text_model: str = "RoBERTa-wwm-ext-base-chinese",
                     model_config: str | Path | None = None, batch_size: int = 64, context_length: int = 52,
                     device: str = "cpu") -> dict[str, int]:
    """Write the image and/or text feature jsonl files; return {'images': n, 'texts': n} written."""
    import torch

    if images is None and texts is None:
        raise DataError("extract_features: give images and/or texts to extract")
    if batch_size < 1:
        raise DataError(f"batch_size = {batch_size}; expected a positive integer")
    model, resolution = load_model(checkpoint, vision_model, text_model, model_config, device)
    done: dict[str, int] = {}

    def encode(batch: np.ndarray, images_batch: bool) -> list:
        with torch.no_grad():
            x = torch.from_numpy(batch).to(device)
            f = (model(x, None) if images_batch else model(None, x)).float()
            return (f / f.norm(dim=-1, keepdim=True)).cpu().tolist()

    if texts is not None:
        records = list(jsonl_records(Path(texts), ("text_id", "text"), "Chinese-CLIP texts jsonl"))
        if not records:
            raise DataError(f"{texts}: no text lines")
        seen: dict = {}
        for lineno, obj in records:
            if obj["text_id"] in seen:
                raise DataError(f"{texts}: line {lineno} repeats text_id {obj['text_id']!r} of line {seen[obj['text_id']]}")
            seen[obj["text_id"]] = lineno
        out_path = Path(text_output) if text_output else Path(str(texts).removesuffix(".jsonl") + ".txt_feat.jsonl")
        with open(out_path, "w", encoding="utf-8") as out:
            for start in range(0, len(records), batch_size):
                part = records[start: start + batch_size]
                feats = encode(tokenize([obj["text"] for _, obj in part], context_length), False)
                for (_, obj), feature in zip(part, feats):
                    out.write(json.dumps({"text_id": obj["text_id"], "feature": feature}, ensure_ascii=False) + "\n")
        done["texts"] = len(records)
    if images is not None:
        src = Path(images)
        default = src.with_name(src.name.removesuffix(".tsv") + ".img_feat.jsonl") if src.is_file() else src.parent / f"{src.name}.img_feat.jsonl"
        seen_ids: set = set()
        count = 0
        with open(Path(image_output) if image_output else default, "w", encoding="utf-8") as out:
            ids, arrays = [], []

            def flush() -> None:
                for image_id, feature in zip(ids, encode(np.stack(arrays), True)):
                    out.write(json.dumps({"image_id": image_id, "feature": feature}, ensure_ascii=False) + "\n")
                ids.clear()
                arrays.clear()

            for image_id, img in iter_images(src):  # streamed: a batch of pixels in memory at a time
                if image_id in seen_ids:
                    raise DataError(f"{src}: image id {image_id!r} appears twice; ids must be unique")
                seen_ids.add(image_id)
                ids.append(image_id)
                arrays.append(preprocess(img, resolution))
                count += 1
                if len(ids) == batch_size:
                    flush()
            if ids:
                flush()
        done["images"] = count
    return done


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m datasets.clip_features", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--checkpoint", required=True, help="local Chinese-CLIP checkpoint (.pt); nothing is downloaded")
    parser.add_argument("--vision-model", default="ViT-B-16", choices=VISION_MODELS, help="vision backbone config (default: %(default)s)")
    parser.add_argument("--text-model", default="RoBERTa-wwm-ext-base-chinese", choices=TEXT_MODELS,
                        help="text backbone config (default: %(default)s)")
    parser.add_argument("--model-config", metavar="JSON", help="one JSON of CLIP arguments instead of the two named configs")
    parser.add_argument("--images", metavar="TSV|DIR", help="<split>_imgs.tsv (id<TAB>base64) or a folder of image files")
    parser.add_argument("--texts", metavar="JSONL", help="<split>_texts.jsonl ({text_id, text} per line)")
    parser.add_argument("--image-output", metavar="JSONL", help="image features path (default: <images>.img_feat.jsonl beside the tsv)")
    parser.add_argument("--text-output", metavar="JSONL", help="text features path (default: <texts>.txt_feat.jsonl)")
    parser.add_argument("--batch-size", type=int, default=64, help="items per forward pass (default: %(default)s)")
    parser.add_argument("--context-length", type=int, default=52, help="text tokens incl. [CLS] and [SEP] (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        done = extract_features(args.checkpoint, images=args.images, texts=args.texts, image_output=args.image_output,
                                text_output=args.text_output, vision_model=args.vision_model, text_model=args.text_model,
                                model_config=args.model_config, batch_size=args.batch_size,
                                context_length=args.context_length, device=args.device)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(", ".join(f"{n} {what}" for what, n in done.items()) + " written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
