"""The caption pipeline (datasets.text): txt -> json conversion, ratio / list / per-class splits,
image resizing (aspect kept, short side 256), word counts, dictionary with special tokens,
per-caption and per-item encodings; each step a subcommand and a library function."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from datasets import DataError
from datasets import text as tx

REPO = Path(__file__).resolve().parent.parent
FLICKR = (
    "1000268201_693b08cb0e.jpg#0\tA child in a pink dress is climbing up a set of stairs in an entry way .\n"
    "1000268201_693b08cb0e.jpg#1\tA girl going into a wooden building .\n"
    "1001773457_577c3a7d70.jpg#1\tA black dog and a tri-colored dog playing with each other on the road .\n"
    "1001773457_577c3a7d70.jpg#0\tA black dog and a spotted dog are fighting\n"
    "1002674143_1b742ab4b8.jpg#0\tA little girl covered in paint sits in front of a painted rainbow .\n"
)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datasets.text", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_flickr_token_txt_to_json(tmp_path):
    src = tmp_path / "Flickr8k.token.txt"
    src.write_text(FLICKR, encoding="utf-8")
    caps = tx.flickr_tokens_to_captions(src)
    assert list(caps) == ["1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg", "1002674143_1b742ab4b8.jpg"]
    assert caps["1001773457_577c3a7d70.jpg"][0] == "A black dog and a spotted dog are fighting"  # ordered by #k
    done = cli("convert", str(src), "--out", str(tmp_path / "caps.json"), "--clip-jsonl", str(tmp_path / "texts.jsonl"))
    assert done.returncode == 0, done.stderr
    assert tx.read_captions(tmp_path / "caps.json")[0] == dict(sorted(caps.items()))
    lines = [json.loads(x) for x in (tmp_path / "texts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(o["text_id"], o["image_ids"]) for o in lines] == [(0, [0]), (1, [0]), (2, [1]), (3, [1]), (4, [2])]
    assert lines[2]["image"] == "1001773457_577c3a7d70.jpg"
    assert tx.read_captions(src)[0] == caps  # the token file is read directly too
    (tmp_path / "bad.txt").write_text(FLICKR + "1000268201_693b08cb0e.jpg#1\tagain\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.txt: line 6 repeats 1000268201_693b08cb0e\.jpg#1 of line 2"):
        tx.flickr_tokens_to_captions(tmp_path / "bad.txt")
    (tmp_path / "bad.txt").write_text(FLICKR + "no tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.txt: line 6 is not 'image\.jpg#k<TAB>caption'"):
        tx.flickr_tokens_to_captions(tmp_path / "bad.txt")
    raw = FLICKR.encode()
    spot = raw.index(b"wooden")
    (tmp_path / "bad.txt").write_bytes(raw[:spot] + b"\xe9" + raw[spot + 1:])  # latin-1 byte
    done = cli("convert", str(tmp_path / "bad.txt"), "--out", str(tmp_path / "x.json"))
    assert done.returncode == 2 and f"bad.txt: line 2, byte offset {spot}: invalid UTF-8" in done.stderr


def test_splits_by_ratio_and_by_lists(tmp_path):
    ids = [f"im{i:03d}.jpg" for i in range(101)]
    parts = tx.split_by_ratio(ids, (0.8, 0.1, 0.1), seed=3)
    assert {p: len(v) for p, v in parts.items()} == {"train": 81, "val": 10, "test": 10}
    assert sorted(sum(parts.values(), [])) == ids and parts == tx.split_by_ratio(ids, (0.8, 0.1, 0.1), seed=3)
    assert parts != tx.split_by_ratio(ids, (0.8, 0.1, 0.1), seed=4)
    with pytest.raises(DataError, match=r"split ratios \[0\.8, 0\.3, 0\.1\]; expected three non-negative numbers"):
        tx.split_by_ratio(ids, (0.8, 0.3, 0.1))
    src = tmp_path / "Flickr8k.token.txt"
    src.write_text(FLICKR, encoding="utf-8")
    names = list(tx.flickr_tokens_to_captions(src))
    for part, chosen in (("train", names[:2]), ("dev", names[2:]), ("test", [])):
        (tmp_path / f"{part}.txt").write_text("".join(n + "\n" for n in chosen))
    done = cli("split", str(src), "--lists", *(str(tmp_path / f"{p}.txt") for p in ("train", "dev", "test")),
               "--out", str(tmp_path / "parts.json"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "parts.json").read_text()) == {"train": names[:2], "val": names[2:], "test": []}
    (tmp_path / "test.txt").write_text(names[0] + "\n")
    with pytest.raises(DataError, match=re.escape(f"test.txt: line 1 names {names[0]!r}, already listed in {tmp_path / 'train.txt'} line 1")):
        tx.split_by_lists(names, {p: tmp_path / f"{f}.txt" for p, f in (("train", "train"), ("val", "dev"), ("test", "test"))})
    (tmp_path / "test.txt").write_text("\nunknown.jpg\n")
    with pytest.raises(DataError, match=r"test\.txt: line 2 names 'unknown\.jpg', which has no captions"):
        tx.split_by_lists(names, {"test": tmp_path / "test.txt"})


def test_resize_keeps_aspect_with_short_side_256(tmp_path):
    from PIL import Image

    (tmp_path / "in" / "sub").mkdir(parents=True)
    Image.new("RGB", (500, 375), (200, 10, 10)).save(tmp_path / "in" / "wide.jpg")
    Image.new("RGBA", (300, 640), (0, 0, 255, 128)).save(tmp_path / "in" / "sub" / "tall.png")
    Image.new("L", (100, 90), 7).save(tmp_path / "in" / "small.jpg")
    done = cli("resize", str(tmp_path / "in"), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    sizes = {p.relative_to(tmp_path / "out").as_posix(): Image.open(p).size for p in (tmp_path / "out").rglob("*.*")}
    assert sizes == {"wide.jpg": (341, 256), "sub/tall.png": (256, 546), "small.jpg": (284, 256)}  # 500*256/375 = 341.3
    assert tx.resize_image(tmp_path / "in" / "wide.jpg", tmp_path / "w.png", short_side=100) == (133, 100)
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"broken\.jpg: not a readable image"):
        tx.resize_folder(tmp_path / "in", tmp_path / "out2")


def test_dictionary_special_tokens_and_encodings():
    counts = Counter({"dog": 5, "a": 9, "runs": 2, "rare": 1})
    scan = tx.build_vocabulary(counts, min_count=2, specials=tx.SCAN_SPECIALS)
    assert scan.words == ["a", "dog", "runs"] and scan.specials == ("<pad>", "<start>", "<end>", "<unk>")
    seq = tx.index_sequences(["a dog runs", "a zebra"], scan, start_end=True)
    assert seq.tolist() == [[1, 4, 5, 6, 2], [1, 4, 3, 2, 0]]  # SCAN's ids: <start> 1, <end> 2, <unk> 3, words from 4
    assert tx.decode(seq[1], scan) == ["<start>", "a", "<unk>", "<end>"]
    assert tx.index_sequences(["a dog runs a dog"], scan, max_len=4, start_end=True).tolist() == [[1, 4, 5, 2]]
    assert tx.Vocabulary.from_json(scan.to_json()) == scan
    plain = tx.build_vocabulary(counts, min_count=2, max_size=2)
    assert tx.index_sequences(["dog zebra a"], plain).tolist() == [[3, 1, 2]]  # default specials: <pad> 0, <unk> 1
    with pytest.raises(DataError, match=r"no '<start>' token"):
        tx.index_sequences(["a"], plain, start_end=True)
    caps = {"x.jpg": ["A dog runs.", "a dog"], "y.jpg": ["a zebra"]}
    per_item = tx.encode_captions(caps, scan, per="item", mode="bow")
    assert per_item["ids"].tolist() == ["x.jpg", "y.jpg"] and per_item["bow"].tolist() == [[2, 2, 1], [1, 0, 0]]
    per_cap = tx.encode_captions(caps, scan, per="caption", mode="seq", start_end=True)
    assert per_cap["ids"].tolist() == ["x.jpg#0", "x.jpg#1", "y.jpg#0"] and per_cap["item"].tolist() == [0, 0, 1]
    assert per_cap["seq"].tolist() == [[1, 4, 5, 6, 2], [1, 4, 5, 2, 0], [1, 4, 3, 2, 0]]


def test_pipeline_on_real_pascal_sentences(shared_data, tmp_path):
    src = shared_data / "pascal-sentences" / "pascal_sentences.json"
    if not src.is_file():
        pytest.skip(f"{src} not present")
    parts_file, vocab_file = tmp_path / "parts.json", tmp_path / "vocab.json"
    assert cli("split", str(src), "--ratio", "0.8", "0.1", "0.1", "--seed", "2", "--out", str(parts_file)).returncode == 0
    parts = json.loads(parts_file.read_text())
    assert {p: len(v) for p, v in parts.items()} == {"train": 800, "val": 100, "test": 100}
    stats = cli("stats", str(src), "--items", str(parts_file), "--top", "3", "--out", str(tmp_path / "counts.json"))
    caps, cats = tx.read_captions(src)
    n_train_caps = sum(len(caps[k]) for k in parts["train"])
    assert stats.returncode == 0 and stats.stdout.startswith(f"items 800  captions {n_train_caps}  ")  # training items only
    built = cli("vocab", str(src), "--items", str(parts_file), "--min-count", "3", "--max-size", "500", "--specials", "scan",
                "--out", str(vocab_file))
    assert built.returncode == 0, built.stderr
    vocab = tx.Vocabulary.from_json(vocab_file.read_text())
    counts = json.loads((tmp_path / "counts.json").read_text())
    assert len(vocab) == 500 and vocab.words == [w for w, c in counts.items() if c >= 3][:500]
    enc = cli("encode", str(src), "--vocab", str(vocab_file), "--per", "caption", "--mode", "seq", "--start-end",
              "--max-len", "24", "--out", str(tmp_path / "seq.npz"))
    assert enc.returncode == 0, enc.stderr
    z = np.load(tmp_path / "seq.npz")
    assert z["seq"].shape == (sum(map(len, caps.values())), 24) and (z["seq"][:, 0] == 1).all()
    assert ((z["seq"] == 2).sum(1) == 1).all()  # one <end> per caption, also when truncated
    assert np.bincount(np.bincount(z["item"])).tolist()[4:] == [3, 996, 1]  # 4, 5 and 6 captions per image
    assert z["labels"].shape == z["item"].shape and len(set(z["labels"].tolist())) == 20


def test_every_subcommand_argument_has_help():
    import argparse

    parser = tx.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(subs.choices) == ["convert", "encode", "resize", "split", "stats", "vocab"]
    for name, sub in subs.choices.items():
        for action in sub._actions:
            assert action.help and action.help.strip(), f"{name}: {action.dest} has no help"
        assert cli(name, "--help").returncode == 0
