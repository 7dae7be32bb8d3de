"""Caption loaders keep what the files say and refuse bad input naming the file and line (or
byte offset): Chinese-CLIP jsonl features and SCAN precomputed features."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

import datasets
from caption_fixtures import scan_captions, write_clip_split, write_scan_split
from datasets import DataError


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _clip(tmp_path):
    write_clip_split(tmp_path, "train", 1, n_images=12, n_texts=20, n_distractors=2)
    return write_clip_split(tmp_path, "valid", 2, n_images=10, n_texts=16, n_distractors=2)


def test_clip_jsonl_keeps_ids_distractors_and_multi_image_texts(tmp_path):
    written = _clip(tmp_path)
    d = datasets.load("clip-jsonl", root=tmp_path)
    q = d.query
    assert q.image_ids.tolist() == written["image_ids"]  # image-feature file order, ints as written
    feat_order = [json.loads(line)["text_id"] for line in (tmp_path / "valid_texts.txt_feat.jsonl").read_text().splitlines()]
    assert q.text_ids.tolist() == feat_order  # text-feature file order
    row = {t: i for i, t in enumerate(written["text_ids"])}
    for r, t in enumerate(feat_order):
        assert [written["image_ids"][i] for i in q.pairing.images_of(r)] == sorted(written["gt"][row[t]], key=written["image_ids"].index)
    described = set(q.pairing.images.tolist())
    assert sorted(set(range(10)) - described) == written["distractors"]  # kept in the gallery, described by no text
    assert d.meta.relevance == "pairing" and d.meta.sources["pairing"].endswith("valid_texts.jsonl")
    pairs = d.train.training_pairs()
    assert len(pairs) == len(d.train.pairing.images) and pairs.labels.shape[1] == d.train.n_images
    capped = datasets.load("clip-jsonl", root=tmp_path, n_train=5, seed=3)
    assert capped.train.n_images == 5 and capped.meta.split_hash != d.meta.split_hash
    kept = capped.meta.split_indices["train.image"]
    np.testing.assert_array_equal(capped.train.image, d.train.image[kept])
    np.testing.assert_array_equal(capped.train.image_ids, d.train.image_ids[kept])
    str_ids = write_clip_split(tmp_path / "s", "valid", 4, n_images=8, n_texts=10, n_distractors=1, string_ids=True)
    write_clip_split(tmp_path / "s", "train", 5, n_images=8, n_texts=10, n_distractors=1, string_ids=True)
    s = datasets.load("clip-jsonl", root=tmp_path / "s")
    assert s.query.image_ids.tolist() == str_ids["image_ids"] and s.query.image_ids.dtype == object


@pytest.mark.parametrize("case, message", [
    ("duplicate_image", r"valid_imgs\.img_feat\.jsonl: line 4 repeats image_id \S+ of line 2; ids must be unique"),
    ("duplicate_text", r"valid_texts\.jsonl: line 3 repeats text_id \S+ of line 1"),
    ("float_id", r"valid_imgs\.img_feat\.jsonl: line 1 has image_id 1\.5 \(float\); expected an integer or a string id"),
    ("width", r"valid_imgs\.img_feat\.jsonl: line 2 \(image_id \S+\) has a feature of shape \(5,\); expected \(6,\)"),
    ("not_json", r"valid_texts\.txt_feat\.jsonl: line 2 is not JSON"),
    ("no_feature", r"valid_texts\.jsonl: line 1 text_id \S+ has no feature in valid_texts\.txt_feat\.jsonl"),
    ("no_annotation", r"valid_texts\.txt_feat\.jsonl: line \d+ text_id 999999999 has no line in valid_texts\.jsonl"),
    ("empty_gt", r"valid_texts\.jsonl: line 2 \(text_id \S+\) has empty image_ids"),
    ("unknown_image", r"valid_texts\.jsonl: line 1 refers to image_id 7, absent from valid_imgs\.img_feat\.jsonl"),
    ("str_vs_int", r"refers to image_id '\d+', absent from valid_imgs\.img_feat\.jsonl \(the file has \d+: ids are compared as written"),
    ("split_width", r"clip-jsonl image feature width differs across splits: \S+valid_imgs\.img_feat\.jsonl has 4-d rows, \S+train_imgs\.img_feat\.jsonl has 6-d"),
])
def test_clip_jsonl_refuses_bad_input_naming_file_and_line(tmp_path, case, message):
    written = _clip(tmp_path)
    imgs = [json.loads(x) for x in (tmp_path / "valid_imgs.img_feat.jsonl").read_text().splitlines()]
    feats = [json.loads(x) for x in (tmp_path / "valid_texts.txt_feat.jsonl").read_text().splitlines()]
    texts = [json.loads(x) for x in (tmp_path / "valid_texts.jsonl").read_text(encoding="utf-8").splitlines()]
    if case == "duplicate_image":
        imgs[3]["image_id"] = imgs[1]["image_id"]
    elif case == "duplicate_text":
        texts[2]["text_id"] = texts[0]["text_id"]
    elif case == "float_id":
        imgs[0]["image_id"] = 1.5
    elif case == "width":
        imgs[1]["feature"] = imgs[1]["feature"][:5]
    elif case == "no_feature":
        feats = [f for f in feats if f["text_id"] != texts[0]["text_id"]]
    elif case == "no_annotation":
        feats.append({"text_id": 999999999, "feature": feats[0]["feature"]})
    elif case == "empty_gt":
        texts[1]["image_ids"] = []
    elif case == "unknown_image":
        texts[0]["image_ids"] = [7]
    elif case == "str_vs_int":
        texts[0]["image_ids"] = [str(written["image_ids"][0])]
    elif case == "split_width":
        for r in imgs:
            r["feature"] = r["feature"][:4]
        for r in feats:
            r["feature"] = r["feature"][:4]
    _write(tmp_path / "valid_imgs.img_feat.jsonl", imgs)
    _write(tmp_path / "valid_texts.txt_feat.jsonl", feats)
    _write(tmp_path / "valid_texts.jsonl", texts)
    if case == "not_json":
        lines = (tmp_path / "valid_texts.txt_feat.jsonl").read_text().splitlines()
        lines[1] = lines[1][:-3]
        (tmp_path / "valid_texts.txt_feat.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        datasets.load("clip-jsonl", root=tmp_path)


def test_non_utf8_caption_refused_with_byte_offset(tmp_path):
    _clip(tmp_path)
    path = tmp_path / "valid_texts.jsonl"
    data = path.read_bytes()
    second = data.index(b"\n") + 1
    spot = data.index("一只狗".encode(), second)
    broken = data[:spot] + b"\xff" + data[spot + 3:]  # one byte of the first CJK character replaced
    path.write_bytes(broken)
    with pytest.raises(DataError, match=re.escape(f"{path}: line 2, byte offset {spot}: invalid UTF-8 b'\\xff")):
        datasets.load("clip-jsonl", root=tmp_path)
    scan = tmp_path / "scan"
    rng = np.random.default_rng(1)
    for split, n in (("train", 4), ("test", 3)):
        write_scan_split(scan, split, rng.standard_normal((n, 4)).astype(np.float32), scan_captions(rng, n), False)
    caps = (scan / "test_caps.txt").read_bytes()
    at = caps.index(b"\n", caps.index(b"\n") + 1) + 5  # line 3, 5 bytes in
    (scan / "test_caps.txt").write_bytes(caps[:at] + b"\xc3\x28" + caps[at + 2:])
    with pytest.raises(DataError, match=re.escape(f"test_caps.txt: line 3, byte offset {at}: invalid UTF-8")):
        datasets.load("scan", root=scan, val_split=None, min_count=1)


def test_scan_layouts_detected_from_caption_count_and_row_equality(tmp_path):
    rng = np.random.default_rng(2)
    ims = {s: rng.standard_normal((n, 36, 6)).astype(np.float32) for s, n in (("train", 6), ("dev", 3), ("test", 4))}
    for split, regions in ims.items():
        write_scan_split(tmp_path, split, regions, scan_captions(rng, len(regions)), repeated=split != "dev")
    d = datasets.load("scan", root=tmp_path, min_count=1)
    assert [(s.n_images, s.n_texts) for s in (d.train, d.validation, d.query)] == [(6, 30), (3, 15), (4, 20)]
    np.testing.assert_allclose(d.query.image, ims["test"].mean(1), rtol=1e-6)  # 5N rows read as the 4 images
    assert d.meta.info["layouts"] == {"train": "5N rows: 6 images each repeated 5 times", "dev": "3 images x 5 captions",
                                      "test": "5N rows: 4 images each repeated 5 times"}
    assert d.query.text_ids.tolist() == list(range(20)) and d.query.image_ids.tolist() == list(range(4))
    # one caption per row, rows distinct: one image per caption
    one = tmp_path / "one"
    write_scan_split(one, "train", rng.standard_normal((10, 5)).astype(np.float32), [f"a dog {i}" for i in range(10)], False)
    write_scan_split(one, "test", rng.standard_normal((10, 5)).astype(np.float32), [f"a cat {i}" for i in range(10)], False)
    o = datasets.load("scan", root=one, val_split=None, min_count=1)
    assert (o.query.n_images, o.query.n_texts) == (10, 10)
    # partly repeated blocks: refused naming the first broken block
    part = np.repeat(rng.standard_normal((4, 5)).astype(np.float32), 5, axis=0)
    part[11] += 1.0
    np.save(one / "test_ims.npy", part)
    (one / "test_caps.txt").write_text("\n".join(scan_captions(rng, 4)) + "\n")
    with pytest.raises(DataError, match=r"test_ims\.npy: 20 rows for 20 captions in test_caps\.txt; 3 of 4 blocks of 5 rows "
                                        r"repeat one image but rows 10\.\.14 do not"):
        datasets.load("scan", root=one, val_split=None, min_count=1)
    np.save(one / "test_ims.npy", rng.standard_normal((7, 5)).astype(np.float32))
    with pytest.raises(DataError, match=r"test_caps\.txt: 20 captions for 7 rows in test_ims\.npy; expected 5 per image \(35\)"):
        datasets.load("scan", root=one, val_split=None, min_count=1)
    np.save(one / "test_ims.npy", rng.standard_normal((4, 9)).astype(np.float32))
    with pytest.raises(DataError, match=r"scan image feature width differs across splits: \S+one/test_ims\.npy has 9-d rows, "
                                        r"\S+one/train_ims\.npy has 5-d"):
        datasets.load("scan", root=one, val_split=None, min_count=1)


def test_scan_captions_split_at_newlines_only(tmp_path):
    rng = np.random.default_rng(3)
    caps = scan_captions(rng, 3)
    caps[4] = "a dog\u2028runs\x0cfast\r"  # a line separator and a form feed inside one caption, CRLF ending
    write_scan_split(tmp_path, "train", rng.standard_normal((3, 4)).astype(np.float32), caps, False)
    write_scan_split(tmp_path, "test", rng.standard_normal((3, 4)).astype(np.float32), caps, False)
    d = datasets.load("scan", root=tmp_path, val_split=None, min_count=1)
    assert d.query.n_texts == 15
    n_train = datasets.load("scan", root=tmp_path, val_split=None, min_count=1, n_train=2)
    assert n_train.train.n_images == 2 and n_train.train.n_texts == 10 and n_train.meta.info["n_train"] == 2
