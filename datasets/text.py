"""The caption pipeline: split, tokenize, count, build a dictionary, encode (bag of words / indices).

Library:
    caps = read_captions("pascal_sentences.json")          # {item id: [caption, ...]}
    counts = count_words(tokenize(c) for cs in caps.values() for c in cs)
    vocab = build_vocabulary(counts, min_count=2, max_size=1000)
    bow = bag_of_words([join_tokens(cs) for cs in caps.values()], vocab)   # (n, |vocab|) float32
    seq = index_sequences(..., vocab, max_len=20)                           # (n, L) int64, 0 = pad

Command: `python -m datasets.text --help` (subcommands `split`, `stats`, `vocab`, `encode`).
`split` writes a seeded per-class train/val/test split of the items (Pascal: 30/10/10 per
class), so the dictionary can be built on the training items only.

Tokens: lower-cased runs of latin letters/digits (an inner apostrophe kept: "man's"), and each
CJK character on its own (Chinese captions carry no spaces; one character per token is the
usual dependency-free choice). Build the dictionary on training captions only, so test words
do not leak into the features.
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

from .container import DataError

TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
SENTENCE_RE = re.compile(r"(?<=[.!?。！？])\s+|\n+")
PAD, UNK = "<pad>", "<unk>"


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

    Sequences use index + 2, keeping 0 for padding and 1 for unknown words.
    """

    words: list[str]
    counts: list[int]
    min_count: int = 1
    max_size: int | None = None
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def to_json(self) -> str:
        """Return the vocabulary as JSON (words, counts, min_count, max_size)."""
        return json.dumps({"words": self.words, "counts": self.counts, "min_count": self.min_count,
                           "max_size": self.max_size}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Vocabulary":
        """Return a Vocabulary from `to_json` output."""
        d = json.loads(text)
        return cls(d["words"], d["counts"], d.get("min_count", 1), d.get("max_size"))


def build_vocabulary(counts: Counter, min_count: int = 1, max_size: int | None = None) -> Vocabulary:
    """Return the dictionary: words seen >= min_count times, the max_size most frequent."""
    if min_count < 1:
        raise DataError(f"text: min_count = {min_count}; expected >= 1")
    if max_size is not None and max_size < 1:
        raise DataError(f"text: max_size = {max_size}; expected >= 1 or None")
    ranked = sorted(((w, c) for w, c in counts.items() if c >= min_count), key=lambda wc: (-wc[1], wc[0]))
    if max_size is not None:
        ranked = ranked[:max_size]
    if not ranked:
        raise DataError(f"text: no word occurs >= {min_count} times; expected a non-empty dictionary")
    return Vocabulary([w for w, _ in ranked], [c for _, c in ranked], min_count, max_size)


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


def index_sequences(docs: Iterable[Sequence[str] | str], vocab: Vocabulary, max_len: int | None = None) -> np.ndarray:
    """Return (n_docs, L) int64 word indices + 2, right-padded with 0; 1 marks unknown words.

    L = max_len, or the longest document; longer documents are truncated.
    """
    seqs = [[vocab.index.get(t, -1) + 2 for t in _tokens(doc)] for doc in docs]
    length = max_len if max_len is not None else max((len(s) for s in seqs), default=0)
    out = np.zeros((len(seqs), max(length, 1)), dtype=np.int64)
    for row, s in enumerate(seqs):
        s = s[:length]
        out[row, : len(s)] = s
    return out


def decode(seq: Sequence[int], vocab: Vocabulary) -> list[str]:
    """Return the words of an index sequence (padding skipped, 1 -> '<unk>')."""
    return [UNK if i == 1 else vocab.words[i - 2] for i in seq if i != 0]


# -- readers for the caption files the loaders meet ------------------------------------------

def read_captions(path: str | Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Return ({item id: [captions]}, {item id: category}) from a caption file.

    .json: Pascal Sentences scrape {id: {"category", "captions": [...]}}; .jsonl: Chinese-CLIP
    texts {"text_id", "text", ...} (one caption per text id); other: one caption per line (SCAN
    `*_caps.txt`), ids are line numbers. Categories are empty unless the file has them.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: caption file not found")
    caps: dict[str, list[str]] = {}
    cats: dict[str, str] = {}
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DataError(f"{path}: not valid JSON ({exc}); expected {{id: {{'category', 'captions'}}}}") from None
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
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                caps[str(obj["text_id"])] = [str(obj["text"])]
            except (ValueError, KeyError, TypeError):
                raise DataError(f"{path}: line {lineno} is not {{'text_id', 'text'}} JSON: {line[:80]!r}") from None
    else:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            caps[str(lineno)] = [line.strip()]
    return caps, cats


def join_tokens(captions: Sequence[str]) -> list[str]:
    """Return the tokens of all captions of one item, in order (one document per item)."""
    return [t for c in captions for t in tokenize(c)]


# -- command line -------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m datasets.text`; returns the exit status."""
    ap = argparse.ArgumentParser(
        prog="python -m datasets.text",
        description="Caption pipeline: word statistics, dictionary building, bag-of-words / index encoding. "
                    "Inputs: Pascal-style .json {id: {category, captions}}, Chinese-CLIP .jsonl texts, or "
                    "a text file with one caption per line.",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("split", help="seeded per-class train/val/test split of the items (needs categories)")
    sp.add_argument("input")
    sp.add_argument("--per-class", type=int, nargs=3, default=(30, 10, 10), metavar=("TRAIN", "VAL", "TEST"))
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", required=True, help="JSON {train: [ids], val: [ids], test: [ids]}")
    st = sub.add_parser("stats", help="print item/caption/token counts and the most frequent words")
    st.add_argument("input")
    st.add_argument("--top", type=int, default=20)
    vo = sub.add_parser("vocab", help="build a dictionary and write it as JSON")
    vo.add_argument("input")
    vo.add_argument("--items", help="JSON from `split`: build on its 'train' ids only")
    vo.add_argument("--min-count", type=int, default=1)
    vo.add_argument("--max-size", type=int, default=None)
    vo.add_argument("--out", required=True, help="vocabulary .json to write")
    en = sub.add_parser("encode", help="encode each item's captions with a dictionary into an .npz")
    en.add_argument("input")
    en.add_argument("--vocab", required=True, help="vocabulary .json from `vocab`")
    en.add_argument("--mode", choices=("bow", "seq"), default="bow")
    en.add_argument("--binary", action="store_true", help="bow: 0/1 instead of counts")
    en.add_argument("--max-len", type=int, default=None, help="seq: pad/truncate to this length")
    en.add_argument("--out", required=True, help=".npz with ids, features, and labels when the input has categories")
    args = ap.parse_args(argv)
    try:
        caps, cats = read_captions(args.input)
        docs = [join_tokens(c) for c in caps.values()]
        if args.cmd == "split":
            from .protocols import per_class_indices

            if not cats:
                raise DataError(f"{args.input}: no categories; `split` needs {{id: {{'category', 'captions'}}}} input")
            keys = list(caps)
            idx = per_class_indices(args.input, np.asarray([cats[k] for k in keys]), tuple(args.per_class), args.seed)
            Path(args.out).write_text(json.dumps({p: [keys[i] for i in v] for p, v in idx.items()}, indent=1))
            print(" ".join(f"{p} {len(v)}" for p, v in idx.items()) + f" -> {args.out}")
        elif args.cmd == "stats":
            counts = count_words(docs)
            n_caps = sum(len(c) for c in caps.values())
            print(f"items {len(caps)}  captions {n_caps}  tokens {sum(counts.values())}  distinct words {len(counts)}")
            for w, c in counts.most_common(args.top):
                print(f"{c:8d}  {w}")
        elif args.cmd == "vocab":
            if args.items:
                train = set(json.loads(Path(args.items).read_text())["train"])
                docs = [d for k, d in zip(caps, docs) if k in train]
            vocab = build_vocabulary(count_words(docs), args.min_count, args.max_size)
            Path(args.out).write_text(vocab.to_json(), encoding="utf-8")
            print(f"{len(vocab)} words (min count {args.min_count}, max size {args.max_size}) -> {args.out}")
        else:
            vocab = Vocabulary.from_json(Path(args.vocab).read_text(encoding="utf-8"))
            feats = bag_of_words(docs, vocab, args.binary) if args.mode == "bow" else index_sequences(docs, vocab, args.max_len)
            out = {"ids": np.asarray(list(caps)), args.mode: feats}
            if cats:
                names = sorted(set(cats.values()))
                out["labels"] = np.asarray([names.index(cats[k]) for k in caps], dtype=np.int64)
                out["label_names"] = np.asarray(names)
            np.savez_compressed(args.out, **out)
            print(f"{args.mode} {feats.shape} -> {args.out}")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
