"""The caption pipeline: convert, split, resize images, count words, build a dictionary, encode.

Library (each step is also a subcommand of `python -m datasets.text`, see --help):
    caps = flickr_tokens_to_captions("Flickr8k.token.txt")  # txt -> {image: [captions by #k]} (write_captions_json)
    caps, cats = read_captions("pascal_sentences.json")     # {item id: [caption, ...]}, {item id: category}
    parts = split_by_ratio(list(caps), (0.8, 0.1, 0.1), seed=0)           # or split_by_lists / split_per_class
    resize_image("a.jpg", "out/a.jpg", short_side=256)      # aspect kept, short side 256 (Pillow)
    counts = count_words(join_tokens(caps[k]) for k in parts["train"])    # words of the training items only
    vocab = build_vocabulary(counts, min_count=2, max_size=1000, specials=SCAN_SPECIALS)
    bow = bag_of_words([join_tokens(cs) for cs in caps.values()], vocab)   # per item: (n, |vocab|) float32
    seq = index_sequences(captions, vocab, max_len=20, start_end=True)     # per caption: (n, L) int64

Tokens: lower-cased runs of latin letters/digits (an inner apostrophe kept: "man's"), and each
CJK character on its own (Chinese captions carry no spaces; one character per token is the
usual dependency-free choice). Build the dictionary on training captions only, so test words
do not leak into the features. Dictionary: words seen >= min_count times, the max_size most
frequent (ties alphabetical); the special tokens come first in the sequence index space and are
no bag-of-words column: ("<pad>", "<unk>") by default (word i -> i + 2), or SCAN's vocab.py order
("<pad>", "<start>", "<end>", "<unk>") with `--specials scan` (word i -> i + 4), which
`--start-end` wraps around each caption as SCAN's loader does.
Encodings: `--per item` one row per item (all its captions in one document), `--per caption`
one row per caption (ids `item#k`, and the row's item index).
Bad input is refused naming the file and the line (or byte offset for non-UTF-8 bytes).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .captions import text_lines
from .container import DataError

TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
SENTENCE_RE = re.compile(r"(?<=[.!?。！？])\s+|\n+")
PAD, UNK, START, END = "<pad>", "<unk>", "<start>", "<end>"
DEFAULT_SPECIALS = (PAD, UNK)
SCAN_SPECIALS = (PAD, START, END, UNK)  # SCAN's vocab.py: <pad> 0, <start> 1, <end> 2, <unk> 3
SPECIALS = {"default": DEFAULT_SPECIALS, "scan": SCAN_SPECIALS}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def split_sentences(text: str) -> list[str]:
    """Return the non-empty sentences of a caption blob (split after . ! ? and at newlines)."""
    return [s.strip() for s in SENTENCE_RE.split(text) if s and s.strip()]


def tokenize(text: str) -> list[str]:
    """Return the tokens of one caption (lower-cased words, CJK characters one by one)."""
    return TOKEN_RE.findall(text.lower().replace("\u2019", "'"))


def count_words(docs: Iterable[Sequence[str] | str]) -> Counter:
    """Return a Counter of word frequencies over documents (token lists, or strings to tokenize)."""
    counts: Counter = Counter()
    for doc in docs:
        counts.update(tokenize(doc) if isinstance(doc, str) else doc)
    return counts


@dataclass
class Vocabulary:
    """Words in frequency order (ties alphabetical); `index` maps word -> column (bag of words).

    Sequences use the special tokens first, then the words: word i has sequence id
    len(specials) + i; `<pad>` must be special 0 (padding), `<unk>` marks unknown words.
    """

    words: list[str]
    counts: list[int]
    min_count: int = 1
    max_size: int | None = None
    specials: tuple[str, ...] = DEFAULT_SPECIALS
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.specials = tuple(self.specials)
        if not self.specials or self.specials[0] != PAD or UNK not in self.specials or len(set(self.specials)) != len(self.specials):
            raise DataError(f"text: special tokens {list(self.specials)}; expected distinct tokens starting with {PAD!r} "
                            f"and holding {UNK!r}")
        clash = sorted(set(self.specials) & set(self.words))
        if clash:
            raise DataError(f"text: special token(s) {clash} are also words of the dictionary")
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def special_id(self, token: str) -> int:
        """Return the sequence id of a special token (DataError if this dictionary lacks it)."""
        if token not in self.specials:
            raise DataError(f"text: the dictionary has no {token!r} token (specials {list(self.specials)}); "
                            "build it with specials=SCAN_SPECIALS (--specials scan)")
        return self.specials.index(token)

    def to_json(self) -> str:
        """Return the vocabulary as JSON (words, counts, min_count, max_size, specials)."""
        return json.dumps({"words": self.words, "counts": self.counts, "min_count": self.min_count,
                           "max_size": self.max_size, "specials": list(self.specials)}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Vocabulary":
        """Return a Vocabulary from `to_json` output."""
        d = json.loads(text)
        return cls(d["words"], d["counts"], d.get("min_count", 1), d.get("max_size"), tuple(d.get("specials", DEFAULT_SPECIALS)))


def build_vocabulary(counts: Counter, min_count: int = 1, max_size: int | None = None,
                     specials: Sequence[str] = DEFAULT_SPECIALS) -> Vocabulary:
    """Return the dictionary: words seen >= min_count times, the max_size most frequent (specials
    come on top of max_size)."""
    if min_count < 1:
        raise DataError(f"text: min_count = {min_count}; expected >= 1")
    if max_size is not None and max_size < 1:
        raise DataError(f"text: max_size = {max_size}; expected >= 1 or None")
    ranked = sorted(((w, c) for w, c in counts.items() if c >= min_count and w not in specials), key=lambda wc: (-wc[1], wc[0]))
    if max_size is not None:
        ranked = ranked[:max_size]
    if not ranked:
        raise DataError(f"text: no word occurs >= {min_count} times; expected a non-empty dictionary")
    return Vocabulary([w for w, _ in ranked], [c for _, c in ranked], min_count, max_size, tuple(specials))


def _tokens(doc: Sequence[str] | str) -> Sequence[str]:
    return tokenize(doc) if isinstance(doc, str) else doc


def bag_of_words(docs: Iterable[Sequence[str] | str], vocab: Vocabulary, binary: bool = False) -> np.ndarray:
    """Return (n_docs, |vocab|) float32 word counts (0/1 if binary); unknown words are dropped."""
    docs = list(docs)
    out = np.zeros((len(docs), len(vocab)), dtype=np.float32)
    index = vocab.index
    for row, doc in enumerate(docs):
        cols = [index[t] for t in _tokens(doc) if t in index]
        if cols:
            np.add.at(out[row], cols, 1.0)
    if binary:
        np.minimum(out, 1.0, out=out)
    return out


def index_sequences(docs: Iterable[Sequence[str] | str], vocab: Vocabulary, max_len: int | None = None,
                    start_end: bool = False) -> np.ndarray:
    """Return (n_docs, L) int64 sequence ids (word i -> len(vocab.specials) + i), right-padded
    with `<pad>` (0); unknown words get `<unk>`'s id. With start_end each document is wrapped in
    `<start>` ... `<end>` (SCAN's loader; the dictionary needs them: SCAN_SPECIALS).

    L = max_len, or the longest document; a longer document keeps its first words (and its
    `<end>` when start_end).
    """
    base, unk = len(vocab.specials), vocab.special_id(UNK)
    start, end = (vocab.special_id(START), vocab.special_id(END)) if start_end else (None, None)
    seqs = []
    for doc in docs:
        ids = [vocab.index[t] + base if t in vocab.index else unk for t in _tokens(doc)]
        seqs.append([start] + ids + [end] if start_end else ids)
    length = max_len if max_len is not None else max((len(s) for s in seqs), default=0)
    if start_end and max_len is not None and max_len < 2:
        raise DataError(f"text: max_len = {max_len}; with start_end a sequence needs room for <start> and <end>")
    out = np.zeros((len(seqs), max(length, 1)), dtype=np.int64)
    for row, s in enumerate(seqs):
        if len(s) > length:
            s = s[: length - 1] + [end] if start_end else s[:length]
        out[row, : len(s)] = s
    return out


def decode(seq: Sequence[int], vocab: Vocabulary) -> list[str]:
    """Return the tokens of a sequence (padding skipped; special tokens by name)."""
    base = len(vocab.specials)
    return [vocab.specials[i] if i < base else vocab.words[i - base] for i in seq if i != 0]


# -- readers for the caption files the loaders meet ------------------------------------------

def _json_file(path: Path, expected: str):
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}, byte offset {exc.start}: invalid UTF-8 {data[exc.start: exc.start + 4]!r} "
                        f"({exc.reason}); expected UTF-8 text") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); expected {expected}") from None


def read_captions(path: str | Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Return ({item id: [captions]}, {item id: category}) from a caption file.

    .json: Pascal Sentences scrape / write_captions_json {id: {"category"?, "captions": [...]}};
    .jsonl: Chinese-CLIP texts {"text_id", "text", ...} (one caption per text id); a Flickr
    `*.token.txt` (`image.jpg#k<TAB>caption`): captions per image; other: one caption per line
    (SCAN `*_caps.txt`), ids are line numbers from 0. Categories are empty unless the file has them.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: caption file not found")
    caps: dict[str, list[str]] = {}
    cats: dict[str, str] = {}
    if path.suffix == ".json":
        data = _json_file(path, "{id: {'category', 'captions'}}")
        if not isinstance(data, dict):
            raise DataError(f"{path}: top level is {type(data).__name__}; expected an object {{id: {{...}}}}")
        for key in sorted(data):
            entry = data[key]
            if not isinstance(entry, dict) or not isinstance(entry.get("captions"), list):
                raise DataError(f"{path}: entry {key!r} has no 'captions' list; expected {{'category', 'captions': [...]}}")
            caps[key] = [str(c) for c in entry["captions"]]
            if "category" in entry:
                cats[key] = str(entry["category"])
    elif path.suffix == ".jsonl":
        for lineno, _, line in text_lines(path, "Chinese-CLIP texts jsonl"):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                key, text = str(obj["text_id"]), str(obj["text"])
            except (ValueError, KeyError, TypeError):
                raise DataError(f"{path}: line {lineno} is not {{'text_id', 'text'}} JSON: {line[:80]!r}") from None
            if key in caps:
                raise DataError(f"{path}: line {lineno} repeats text_id {key!r}; ids must be unique")
            caps[key] = [text]
    elif is_flickr_tokens(path):
        caps = flickr_tokens_to_captions(path)
    else:
        for lineno, _, line in text_lines(path, "one caption per line"):
            caps[str(lineno - 1)] = [line.strip()]
    return caps, cats


def join_tokens(captions: Sequence[str]) -> list[str]:
    """Return the tokens of all captions of one item, in order (one document per item)."""
    return [t for c in captions for t in tokenize(c)]


# -- txt -> json annotation conversion ---------------------------------------------------------

FLICKR_LINE = re.compile(r"^(?P<image>[^\t#]+)#(?P<k>\d+)\t(?P<caption>.*)$")


def is_flickr_tokens(path: Path) -> bool:
    """True when the first non-blank line of a .txt file has Flickr's `image.jpg#k<TAB>caption` form."""
    if Path(path).suffix != ".txt":
        return False
    for _, _, line in text_lines(path, "a caption file"):
        if line.strip():
            return FLICKR_LINE.match(line) is not None
    return False


def flickr_tokens_to_captions(path: str | Path) -> dict[str, list[str]]:
    """Return {image: [captions ordered by #k]} from Flickr8k/30k's `Flickr8k.token.txt`
    (`1000268201_693b08cb0e.jpg#0<TAB>A child in a pink dress ...` per line), images in the order
    they first appear. Refused naming the line: a line of another form, an (image, #k) given twice,
    non-UTF-8 bytes (with the byte offset)."""
    path = Path(path)
    found: dict[str, dict[int, tuple[str, int]]] = {}
    for lineno, _, line in text_lines(path, "Flickr captions, image.jpg#k<TAB>caption per line"):
        if not line.strip():
            continue
        m = FLICKR_LINE.match(line)
        if m is None:
            raise DataError(f"{path}: line {lineno} is not 'image.jpg#k<TAB>caption': {line[:80]!r}")
        image, k, caption = m["image"].strip(), int(m["k"]), m["caption"].strip()
        entry = found.setdefault(image, {})
        if k in entry:
            raise DataError(f"{path}: line {lineno} repeats {image}#{k} of line {entry[k][1]}; each caption index once per image")
        entry[k] = (caption, lineno)
    if not found:
        raise DataError(f"{path}: no caption lines; expected 'image.jpg#k<TAB>caption' per line")
    return {image: [entry[k][0] for k in sorted(entry)] for image, entry in found.items()}


def write_captions_json(captions: dict[str, list[str]], path: str | Path, categories: dict[str, str] | None = None) -> None:
    """Write {item: {"captions": [...]}} (plus "category" when known): read_captions' .json layout."""
    out = {k: ({"category": categories[k]} if categories and k in categories else {}) | {"captions": list(v)}
           for k, v in captions.items()}
    Path(path).write_text(json.dumps(out, ensure_ascii=False, indent=1), encoding="utf-8")


def write_clip_texts(captions: dict[str, list[str]], path: str | Path) -> None:
    """Write Chinese-CLIP's texts jsonl: one {"text_id", "text", "image_ids", "image"} per caption,
    integer ids (its evaluation.py requires ints: text ids count captions, image ids count images
    in order) and the image's file name under "image" (an extra key its readers ignore)."""
    with open(path, "w", encoding="utf-8") as out:
        t = 0
        for i, (image, caps) in enumerate(captions.items()):
            for caption in caps:
                out.write(json.dumps({"text_id": t, "text": caption, "image_ids": [i], "image": image}, ensure_ascii=False) + "\n")
                t += 1


# -- splits ----------------------------------------------------------------------------------------

PARTS = ("train", "val", "test")


def split_by_ratio(ids: Sequence[str], ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> dict[str, list[str]]:
    """Return {train, val, test: ids} from a seeded permutation of `ids`: val and test take
    round(n * ratio) items, train the rest; each part keeps the input order."""
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise DataError(f"text: split ratios {list(ratios)}; expected three non-negative numbers (train val test) summing to 1")
    n = len(ids)
    perm = np.random.default_rng(seed).permutation(n)
    n_val, n_test = round(n * ratios[1]), round(n * ratios[2])
    cut = {"val": perm[:n_val], "test": perm[n_val: n_val + n_test], "train": perm[n_val + n_test:]}
    return {p: [ids[i] for i in np.sort(cut[p])] for p in PARTS}


def split_by_lists(ids: Sequence[str], lists: dict[str, str | Path]) -> dict[str, list[str]]:
    """Return {part: ids} from list files (one id per line, e.g. Flickr_8k.trainImages.txt).
    Refused naming the file and line: an id the captions lack, an id in two lists or twice in one.
    Items in no list belong to no part."""
    known = set(ids)
    where: dict[str, tuple[str, int]] = {}
    out: dict[str, list[str]] = {}
    for part, file in lists.items():
        out[part] = []
        for lineno, _, line in text_lines(Path(file), f"the {part} list, one id per line"):
            item = line.strip()
            if not item:
                continue
            if item not in known:
                raise DataError(f"{file}: line {lineno} names {item!r}, which has no captions in the input")
            if item in where:
                raise DataError(f"{file}: line {lineno} names {item!r}, already listed in {where[item][0]} line {where[item][1]}")
            where[item] = (str(file), lineno)
            out[part].append(item)
    return out


def split_per_class(ids: Sequence[str], categories: dict[str, str], per_class: Sequence[int] = (30, 10, 10),
                    seed: int = 0, name: str = "text") -> dict[str, list[str]]:
    """Return {train, val, test: ids} taking per_class[k] seeded-random items of every class for
    part k (Pascal Sentences: 30 / 10 / 10)."""
    from .protocols import per_class_indices

    if not categories:
        raise DataError(f"{name}: no categories; a per-class split needs {{id: {{'category', 'captions'}}}} input")
    idx = per_class_indices(name, np.asarray([categories[k] for k in ids]), tuple(per_class), seed)
    return {p: [ids[i] for i in v] for p, v in idx.items()}


# -- images -------------------------------------------------------------------------------------------

def resize_image(src: str | Path, dst: str | Path, short_side: int = 256, resample: str = "bicubic") -> tuple[int, int]:
    """Resize one image with Pillow so its shorter side is `short_side`, aspect ratio kept (the
    long side rounded); write it to dst (format from dst's suffix); return the new (width, height)."""
    from PIL import Image, UnidentifiedImageError

    if short_side < 1:
        raise DataError(f"text: short_side = {short_side}; expected a positive number of pixels")
    filters = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR, "lanczos": Image.Resampling.LANCZOS,
               "nearest": Image.Resampling.NEAREST}
    if resample not in filters:
        raise DataError(f"text: resample = {resample!r}; expected one of {sorted(filters)}")
    try:
        with Image.open(src) as img:
            img.load()
            w, h = img.size
            scale = short_side / min(w, h)
            size = (short_side, max(1, round(h * scale))) if w <= h else (max(1, round(w * scale)), short_side)
            out = img.resize(size, filters[resample])
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{src}: not a readable image ({exc}); expected a JPEG/PNG/... file") from None
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.suffix.lower() in (".jpg", ".jpeg") and out.mode not in ("RGB", "L"):
        out = out.convert("RGB")
    out.save(dst, **({"quality": 95} if dst.suffix.lower() in (".jpg", ".jpeg") else {}))
    return out.size


def resize_folder(src: str | Path, dst: str | Path, short_side: int = 256, resample: str = "bicubic") -> int:
    """Resize every image under `src` (by suffix, recursively) into the same relative path under
    `dst`; return the number of images written."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DataError(f"{src}: not a folder; expected a folder of images")
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{src}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    for f in files:
        resize_image(f, dst / f.relative_to(src), short_side, resample)
    return len(files)


# -- encodings -----------------------------------------------------------------------------------

def encode_captions(caps: dict[str, list[str]], vocab: Vocabulary, *, per: str = "item", mode: str = "bow",
                    binary: bool = False, max_len: int | None = None, start_end: bool = False) -> dict[str, np.ndarray]:
    """Return {'ids', 'item', mode: features} encoding each item (`per='item'`: its captions as one
    document) or each caption (`per='caption'`: ids `item#k`); 'item' is each row's item index."""
    if per not in ("item", "caption"):
        raise DataError(f"text: per = {per!r}; expected 'item' or 'caption'")
    if mode not in ("bow", "seq"):
        raise DataError(f"text: mode = {mode!r}; expected 'bow' or 'seq'")
    keys = list(caps)
    if per == "item":
        ids, item, docs = keys, np.arange(len(keys)), [join_tokens(caps[k]) for k in keys]
    else:
        ids = [f"{k}#{j}" for k in keys for j in range(len(caps[k]))]
        item = np.asarray([i for i, k in enumerate(keys) for _ in caps[k]], dtype=np.int64)
        docs = [tokenize(c) for k in keys for c in caps[k]]
    feats = bag_of_words(docs, vocab, binary) if mode == "bow" else index_sequences(docs, vocab, max_len, start_end)
    return {"ids": np.asarray(ids), "item": np.asarray(item, dtype=np.int64), mode: feats}


# -- command line -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m datasets.text",
        description="Caption pipeline: txt -> json conversion, splits, image resizing, word statistics, dictionary "
                    "building, bag-of-words / index encoding. Caption inputs: Pascal-style .json {id: {category, captions}}, "
                    "Chinese-CLIP .jsonl texts, a Flickr *.token.txt (image#k<TAB>caption), or one caption per line.",
        epilog="Example (Flickr8k): convert Flickr8k.token.txt --out caps.json; split caps.json --lists "
               "Flickr_8k.trainImages.txt Flickr_8k.devImages.txt Flickr_8k.testImages.txt --out parts.json; "
               "resize Flicker8k_Dataset/ --out images256/; vocab caps.json --items parts.json --min-count 4 "
               "--specials scan --out vocab.json; encode caps.json --vocab vocab.json --per caption --mode seq "
               "--start-end --out seq.npz",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    inp = "caption file (.json, .jsonl, Flickr .token.txt, or one caption per line)"
    cv = sub.add_parser("convert", help="Flickr8k/30k token txt (image.jpg#k<TAB>caption) -> json annotation")
    cv.add_argument("input", help="Flickr8k.token.txt / results_20130124.token")
    cv.add_argument("--out", required=True, help="JSON to write: {image: {captions: [...]}} (read back by every subcommand)")
    cv.add_argument("--clip-jsonl", metavar="FILE", help="also write Chinese-CLIP's texts jsonl (integer ids, 'image' = file name)")
    sp = sub.add_parser("split", help="train/val/test split of the items: per class, by ratio, or by list files")
    sp.add_argument("input", help=inp)
    how = sp.add_mutually_exclusive_group()
    how.add_argument("--per-class", type=int, nargs=3, default=None, metavar=("TRAIN", "VAL", "TEST"),
                     help="items per class and part (needs categories; the default, 30 10 10, when no other way is given)")
    how.add_argument("--ratio", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"), help="fractions summing to 1, seeded random")
    how.add_argument("--lists", nargs=3, metavar=("TRAIN", "VAL", "TEST"), help="files of item ids, one per line")
    sp.add_argument("--seed", type=int, default=0, help="seed of the random splits (default: %(default)s)")
    sp.add_argument("--out", required=True, help="JSON {train: [ids], val: [ids], test: [ids]}")
    rs = sub.add_parser("resize", help="resize images with Pillow, aspect ratio kept, short side 256")
    rs.add_argument("input", help="an image file or a folder of images (searched recursively)")
    rs.add_argument("--out", required=True, help="output image (for a file) or folder (same relative paths)")
    rs.add_argument("--short-side", type=int, default=256, help="length of the shorter side in pixels (default: %(default)s)")
    rs.add_argument("--resample", choices=("bicubic", "bilinear", "lanczos", "nearest"), default="bicubic",
                    help="Pillow resampling filter (default: %(default)s)")
    st = sub.add_parser("stats", help="print item/caption/token counts and the most frequent words")
    st.add_argument("input", help=inp)
    st.add_argument("--items", help="JSON from `split`: count the 'train' items only")
    st.add_argument("--top", type=int, default=20, help="how many of the most frequent words to print (default: %(default)s)")
    st.add_argument("--out", help="also write all word counts as JSON {word: count}, most frequent first")
    vo = sub.add_parser("vocab", help="build a dictionary and write it as JSON")
    vo.add_argument("input", help=inp)
    vo.add_argument("--items", help="JSON from `split`: build on its 'train' ids only")
    vo.add_argument("--min-count", type=int, default=1, help="keep words seen at least this often (default: %(default)s)")
    vo.add_argument("--max-size", type=int, default=None, help="keep at most this many words, most frequent first (default: all)")
    vo.add_argument("--specials", choices=sorted(SPECIALS), default="default",
                    help="special tokens: default = <pad> <unk>; scan = <pad> <start> <end> <unk> (SCAN's vocab.py)")
    vo.add_argument("--out", required=True, help="vocabulary .json to write")
    en = sub.add_parser("encode", help="encode captions with a dictionary into an .npz (per item or per caption)")
    en.add_argument("input", help=inp)
    en.add_argument("--vocab", required=True, help="vocabulary .json from `vocab`")
    en.add_argument("--per", choices=("item", "caption"), default="item",
                    help="one row per item (its captions joined) or per caption (ids item#k) (default: %(default)s)")
    en.add_argument("--mode", choices=("bow", "seq"), default="bow", help="bag of words or index sequences (default: %(default)s)")
    en.add_argument("--binary", action="store_true", help="bow: 0/1 instead of counts")
    en.add_argument("--max-len", type=int, default=None, help="seq: pad/truncate to this length (default: the longest)")
    en.add_argument("--start-end", action="store_true", help="seq: wrap each row in <start> ... <end> (needs --specials scan)")
    en.add_argument("--out", required=True, help=".npz with ids, item, the features, and labels when the input has categories")
    return ap


def _train_items(caps: dict[str, list[str]], items: str | None) -> dict[str, list[str]]:
    if not items:
        return caps
    parts = _json_file(Path(items), "{train: [ids], ...} from `split`")
    if not isinstance(parts, dict) or not isinstance(parts.get("train"), list):
        raise DataError(f"{items}: no 'train' list; expected the JSON that `split` writes")
    missing = [k for k in parts["train"] if k not in caps]
    if missing:
        raise DataError(f"{items}: train id {missing[0]!r} has no captions in the input ({len(missing)} such ids)")
    return {k: caps[k] for k in parts["train"]}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m datasets.text`; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "convert":
            caps = flickr_tokens_to_captions(args.input)
            write_captions_json(caps, args.out)
            if args.clip_jsonl:
                write_clip_texts(caps, args.clip_jsonl)
            print(f"{len(caps)} images, {sum(map(len, caps.values()))} captions -> {args.out}"
                  + (f" and {args.clip_jsonl}" if args.clip_jsonl else ""))
            return 0
        if args.cmd == "resize":
            if Path(args.input).is_dir():
                n = resize_folder(args.input, args.out, args.short_side, args.resample)
                print(f"{n} images, short side {args.short_side} -> {args.out}")
            else:
                size = resize_image(args.input, args.out, args.short_side, args.resample)
                print(f"{args.input} -> {args.out} {size[0]}x{size[1]}")
            return 0
        caps, cats = read_captions(args.input)
        if args.cmd == "split":
            keys = list(caps)
            if args.ratio:
                parts = split_by_ratio(keys, args.ratio, args.seed)
            elif args.lists:
                parts = split_by_lists(keys, dict(zip(PARTS, args.lists)))
            else:
                parts = split_per_class(keys, cats, tuple(args.per_class or (30, 10, 10)), args.seed, str(args.input))
            Path(args.out).write_text(json.dumps(parts, indent=1, ensure_ascii=False), encoding="utf-8")
            print(" ".join(f"{p} {len(v)}" for p, v in parts.items()) + f" -> {args.out}")
        elif args.cmd == "stats":
            chosen = _train_items(caps, args.items)
            counts = count_words(join_tokens(c) for c in chosen.values())
            n_caps = sum(len(c) for c in chosen.values())
            print(f"items {len(chosen)}  captions {n_caps}  tokens {sum(counts.values())}  distinct words {len(counts)}")
            for w, c in counts.most_common(args.top):
                print(f"{c:8d}  {w}")
            if args.out:
                ranked = dict(sorted(counts.items(), key=lambda wc: (-wc[1], wc[0])))
                Path(args.out).write_text(json.dumps(ranked, ensure_ascii=False), encoding="utf-8")
        elif args.cmd == "vocab":
            chosen = _train_items(caps, args.items)
            vocab = build_vocabulary(count_words(join_tokens(c) for c in chosen.values()), args.min_count, args.max_size,
                                     SPECIALS[args.specials])
            Path(args.out).write_text(vocab.to_json(), encoding="utf-8")
            print(f"{len(vocab)} words + {len(vocab.specials)} special tokens (min count {args.min_count}, "
                  f"max size {args.max_size}) -> {args.out}")
        else:
            vocab = Vocabulary.from_json(Path(args.vocab).read_text(encoding="utf-8"))
            out = encode_captions(caps, vocab, per=args.per, mode=args.mode, binary=args.binary, max_len=args.max_len,
                                  start_end=args.start_end)
            if cats:
                names = sorted(set(cats.values()))
                keys = list(caps)
                out["labels"] = np.asarray([names.index(cats[keys[i]]) for i in out["item"]], dtype=np.int64)
                out["label_names"] = np.asarray(names)
            np.savez_compressed(args.out, **out)
            print(f"{args.mode} per {args.per} {out[args.mode].shape} -> {args.out}")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
