"""Format fixtures in the exact published layouts, written here, read back through the loaders.

MATLAB v5 files are written with scipy.io.savemat; MATLAB v7.3 files with h5py the way MATLAB
writes them: a 512-byte 'MATLAB 7.3 MAT-file' user block, then HDF5 with every variable's axes
reversed (MATLAB is column-major), so an items x dims matrix is stored dims x items.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io as sio

import datasets
from datasets import DataError
from datasets.mat import ArrayFile, orient, sniff

MATLAB_CLASS = {"f": "double", "u": "uint8", "i": "int32", "b": "logical"}


def write_mat73(path: Path, arrays: dict) -> Path:
    """Write `arrays` as MATLAB v7.3 does: user-block header, axes reversed in HDF5."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for key, value in arrays.items():
            value = np.asarray(value)
            if value.ndim == 1:  # MATLAB has no 1-D arrays: a vector is n x 1
                value = value[:, None]
            ds = f.create_dataset(key, data=value.T)
            ds.attrs["MATLAB_class"] = np.bytes_(MATLAB_CLASS[value.dtype.kind])
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    header = text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as fh:
        fh.write(header.ljust(512, b"\x00"))
    return path


def multi_hot(rng, n, c, k=3):
    lab = (rng.random((n, c)) < k / c).astype(np.uint8)
    lab[np.arange(n), rng.integers(0, c, n)] = 1  # at least one label each
    return lab


def items(rng, n, di=16, dt=12, c=5):
    return (rng.standard_normal((n, di)).astype(np.float32),
            (rng.random((n, dt)) < 0.2).astype(np.float32),
            multi_hot(rng, n, c))


# --- the reader ------------------------------------------------------------------------------

def test_v73_reads_back_in_matlab_orientation(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 7))
    write_mat73(tmp_path / "a.mat", {"X": x})
    with h5py.File(tmp_path / "a.mat") as f:
        assert f["X"].shape == (7, 40)  # what h5py alone shows: transposed
    with ArrayFile(tmp_path / "a.mat") as f:
        assert f.format == "v7.3"
        np.testing.assert_array_equal(np.asarray(f.get("X")), x)
        blocks = list(f.get("X").row_blocks(0, block=16))
        np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), x)


def test_sniff_tells_formats_apart(tmp_path):
    sio.savemat(tmp_path / "v5.mat", {"a": np.ones((3, 2))})
    write_mat73(tmp_path / "v73.mat", {"a": np.ones((3, 2))})
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f["a"] = np.ones((3, 2))
    np.savez(tmp_path / "z.npz", a=np.ones((3, 2)))
    got = [sniff(tmp_path / n) for n in ("v5.mat", "v73.mat", "p.h5", "z.npz")]
    assert got == ["v5", "v7.3", "h5", "npz"]


def test_orientation_detected_from_shared_item_count():
    where = {"image": "f:I", "text": "f:T", "labels": "f:L"}
    n, axes = orient({"image": np.zeros((64, 100)), "text": np.zeros((100, 9)), "labels": np.zeros((1, 100))}, where)
    assert n == 100 and axes == {"image": 1, "text": 0, "labels": 1}


def test_orientation_ambiguity_is_an_error():
    where = {"image": "f.mat:I", "text": "f.mat:T"}
    with pytest.raises(DataError, match=r"ambiguous.*f\.mat:I"):
        orient({"image": np.zeros((30, 40)), "text": np.zeros((40, 30))}, where)
    with pytest.raises(DataError, match=r"f\.mat:I: is square \(50, 50\); cannot tell"):
        orient({"image": np.zeros((50, 50)), "text": np.zeros((50, 7))}, where)


def test_square_feature_matrix_in_a_real_loader_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "sq.npz", image=rng.random((50, 50)), text=rng.random((50, 7)), labels=multi_hot(rng, 50, 3))
    with pytest.raises(DataError, match=r"sq\.npz:image: is square \(50, 50\)"):
        datasets.load("generic", path=tmp_path / "sq.npz", n_query=5, n_train=10)


# --- published layouts -----------------------------------------------------------------------

def test_mirflickr_flickr25k_v73_features(tmp_path):
    rng = np.random.default_rng(2)
    img, txt, lab = items(rng, 20015, di=32, dt=20, c=24)
    write_mat73(tmp_path / "FLICKR-25K.mat", {"images": img, "YAll": txt, "LAll": lab})
    d = datasets.load("mirflickr25k", root=tmp_path, seed=3)
    assert d.meta.sizes == {"query": 2000, "retrieval": 18015, "train": 10000}
    q = d.meta.split_indices["query"]
    np.testing.assert_array_equal(d.query.image, img[q])
    np.testing.assert_array_equal(d.query.labels, lab[q])
    assert not d.single_label and d.num_classes == 24
    assert d.meta.info["formats"][str(tmp_path / "FLICKR-25K.mat")] == "v7.3"


def test_mirflickr_dcmh_pixels_are_refused_with_advice(tmp_path):
    rng = np.random.default_rng(3)
    _, txt, lab = items(rng, 20, dt=6, c=4)
    pixels = rng.integers(0, 255, (20, 3, 8, 8)).astype(np.uint8)  # MATLAB 8x8x3x20 as h5py sees it reversed
    write_mat73(tmp_path / "FLICKR-25K.mat", {"images": pixels, "YAll": txt, "LAll": lab})
    with pytest.raises(DataError, match=r"FLICKR-25K\.mat:images: has 4 dimensions.*raw pixels"):
        datasets.load("mirflickr25k", root=tmp_path, n_query=2, n_train=5)


def test_mirflickr_split_files_v5(tmp_path):
    rng = np.random.default_rng(4)
    img, txt, lab = items(rng, 300, di=24, dt=30, c=24)
    sio.savemat(tmp_path / "mirflickr25k-xall-vgg.mat", {"XAll": img})
    sio.savemat(tmp_path / "mirflickr25k-yall.mat", {"YAll": txt.astype(np.uint8)})
    sio.savemat(tmp_path / "mirflickr25k-lall.mat", {"LAll": lab})
    d = datasets.load("mirflickr25k", root=tmp_path, n_query=50, n_train=100, seed=0)
    r = d.meta.split_indices["retrieval"]
    np.testing.assert_array_equal(d.retrieval.text, txt[r])
    assert set(d.meta.split_indices["train"]) <= set(r)


def test_nuswide_tc21_dadh_v73_and_tc10_split_files(tmp_path):
    rng = np.random.default_rng(5)
    img, txt, lab = items(rng, 400, di=40, dt=25, c=21)
    (tmp_path / "v5").mkdir()
    sio.savemat(tmp_path / "v5" / "NUS-WIDE-TC21.mat", {"image": img, "text": txt, "label": lab})  # DADH reads it with scipy
    write_mat73(tmp_path / "NUS-WIDE-TC21.mat", {"image": img, "text": txt, "label": lab})
    d = datasets.load("nus-wide-tc21", root=tmp_path, n_query=21, n_train=105)
    assert (len(d.query), len(d.retrieval), len(d.train)) == (21, 379, 105)
    np.testing.assert_array_equal(d.train.image, img[d.meta.split_indices["train"]])
    assert datasets.load("nus-wide-tc21", root=tmp_path / "v5", n_query=21, n_train=105).fingerprint() == d.fingerprint()
    img, txt, lab = items(rng, 300, di=40, dt=25, c=10)
    sio.savemat(tmp_path / "nus-wide-tc10-xall-vgg.mat", {"XAll": img.T})  # stored dims x items: detected
    sio.savemat(tmp_path / "nus-wide-tc10-yall.mat", {"YAll": txt})
    sio.savemat(tmp_path / "nus-wide-tc10-lall.mat", {"LAll": lab})
    d = datasets.load("nus-wide-tc10", root=tmp_path, n_query=30, n_train=100)
    np.testing.assert_array_equal(d.query.image, img[d.meta.split_indices["query"]])


def test_nuswide_default_protocol_sizes_need_enough_items(tmp_path):
    rng = np.random.default_rng(6)
    img, txt, lab = items(rng, 12000, di=4, dt=5, c=21)
    write_mat73(tmp_path / "NUS-WIDE-TC21.mat", {"image": img, "text": txt, "label": lab})
    with pytest.raises(DataError, match=r"NUS-WIDE-TC21\.mat:image\).*n_train .* = 10500 is larger than the data allows \(9900\)"):
        datasets.load("nus-wide-tc21", root=tmp_path)


def test_iapr_ucch_layout_v73(tmp_path):
    rng = np.random.default_rng(7)
    db = items(rng, 200, di=20, dt=30, c=255)
    te = items(rng, 40, di=20, dt=30, c=255)
    write_mat73(tmp_path / "iapr-tc12-rand.mat", {
        "VDatabase": db[0], "YDatabase": db[1], "databaseL": db[2],
        "VTest": te[0], "YTest": te[1], "testL": te[2]})
    d = datasets.load("iapr-tc12", root=tmp_path, n_train=120, seed=1)
    assert d.meta.protocol == "file" and d.meta.pool_order == "database rows, then test rows"
    np.testing.assert_array_equal(d.query.image, te[0])
    np.testing.assert_array_equal(d.retrieval.text, db[1])
    assert len(d.train) == 120 and set(d.meta.split_indices["train"]) <= set(range(200))
    d2 = datasets.load("iapr-tc12", root=tmp_path, protocol="dcmh", n_query=20, n_train=100)
    assert d2.meta.sizes == {"query": 20, "retrieval": 220, "train": 100}


def test_mscoco_ucch_h5(tmp_path):
    rng = np.random.default_rng(8)
    img, txt, lab = items(rng, 500, di=32, dt=30, c=80)
    with h5py.File(tmp_path / "MSCOCO_deep_doc2vec_data_rand.h5py", "w") as f:  # written from Python: rows first
        f["XAll"], f["YAll"], f["LAll"] = img, txt, lab
    d = datasets.load("mscoco", root=tmp_path, n_query=50, n_train=200)
    np.testing.assert_array_equal(d.query.text, txt[d.meta.split_indices["query"]])
    assert d.num_classes == 80


def _dscmr_dir(tmp_path, n_train=800, n_test=100, val=0):
    """DSCMR's data/pascal layout (checked against penghu-cs/DSCMR@0e110b9's test files): one v5
    file per variable, float32 features (n x 4096 / n x 300; narrower here), int64 n x 1 class ids
    0..19, 40 train and 5 test items per class, rows ordered by class."""
    rng = np.random.default_rng(9)
    out = {}
    for part, n in (("train", n_train), ("test", n_test)) + ((("val", val),) if val else ()):
        img = rng.random((n, 64), dtype=np.float32)
        txt = rng.random((n, 30), dtype=np.float32)
        lab = (np.arange(n) * 20 // n).reshape(-1, 1).astype(np.int64)
        for suffix, arr in (("img", img), ("txt", txt), ("img_lab", lab)):
            sio.savemat(tmp_path / f"{part}_{suffix}.mat", {f"{part}_{suffix}": arr})
        out[part] = (img, txt, lab)
    return out


def test_pascal_dscmr_files(tmp_path):
    parts = _dscmr_dir(tmp_path)
    d = datasets.load("pascal-sentences", root=tmp_path)
    assert d.query is d.retrieval and len(d.query) == 100 and len(d.train) == 800
    np.testing.assert_array_equal(d.train.image, parts["train"][0])
    assert d.num_classes == 20 and d.single_label
    assert (d.train.labels.argmax(1) == parts["train"][2][:, 0]).all()  # 0-based ids kept as is
    assert d.query.labels.sum(0).tolist() == [5.0] * 20
    d = datasets.load("pascal-sentences", root=tmp_path, n_validation=80)
    assert len(d.train) == 720 and len(d.validation) == 80
    assert not set(d.meta.split_indices["validation"]) & set(d.meta.split_indices["query"])


def test_pascal_shipped_val_part(tmp_path):
    _dscmr_dir(tmp_path, n_train=700, val=100)
    d = datasets.load("pascal-sentences", root=tmp_path)
    assert len(d.validation) == 100 and d.meta.sizes["validation"] == 100 and len(d.train) == 700
    with pytest.raises(DataError, match="ships a validation part"):
        datasets.load("pascal-sentences", root=tmp_path, n_validation=10)


def test_generic_npz_h5_mat_and_presplit(tmp_path):
    rng = np.random.default_rng(10)
    img, txt, lab = items(rng, 120)
    np.savez(tmp_path / "a.npz", image=img, text=txt, labels=lab)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["image"], f["text"], f["labels"] = img, txt, lab
    write_mat73(tmp_path / "a73.mat", {"image": img, "text": txt, "labels": lab})
    prints = {datasets.load("generic", path=tmp_path / n, n_query=20, n_train=50, seed=4).fingerprint()
              for n in ("a.npz", "a.h5", "a73.mat")}
    assert len(prints) == 1  # same arrays, same split, whatever the container format
    cls = rng.integers(1, 6, 120)  # MATLAB-style class ids 1..5 in a v5 file, custom key names
    sio.savemat(tmp_path / "c.mat", {"feat_i": img, "feat_t": txt, "y": cls[:, None].astype(np.double)})
    d = datasets.load("generic", path=tmp_path / "c.mat", keys={"image": "feat_i", "text": "feat_t", "labels": "y"},
                      n_query=20, n_train=50)
    assert d.single_label and d.num_classes == 5 and d.meta.info["label_base"] == 1
    np.savez(tmp_path / "s.npz", train_image=img[:80], train_text=txt[:80], train_labels=lab[:80],
             test_image=img[80:], test_text=txt[80:], test_labels=lab[80:])
    d = datasets.load("generic", path=tmp_path / "s.npz")
    assert d.meta.protocol == "file" and len(d.train) == 80 and d.query is d.retrieval
    np.testing.assert_array_equal(d.query.image, img[80:])


def test_scan_precomputed(tmp_path):
    rng = np.random.default_rng(11)
    words = "a dog man woman runs sits on the grass beach red ball".split()
    ims = {}
    for split, n in (("train", 12), ("dev", 4), ("test", 5)):
        ims[split] = rng.standard_normal((n, 36, 8)).astype(np.float32)  # bottom-up regions
        np.save(tmp_path / f"{split}_ims.npy", ims[split])
        caps = [" ".join(rng.choice(words, 6)) for _ in range(5 * n)]
        (tmp_path / f"{split}_caps.txt").write_text("\n".join(caps) + "\n")
    d = datasets.load("scan", root=tmp_path, min_count=1)
    sizes = [(s.n_images, s.n_texts) for s in (d.train, d.validation, d.query)]
    assert sizes == [(12, 60), (4, 20), (5, 25)]  # each image once in the gallery, 5 captions each
    assert d.meta.relevance == "pairing" and d.query is d.retrieval
    np.testing.assert_allclose(d.query.image, ims["test"].mean(1), rtol=1e-6)
    assert (d.query.pairing.images == np.arange(25) // 5).all()  # caption j describes image j // 5
    assert (d.query.text.sum(1) == 6).all()  # every token of a caption is in the train dictionary here
    d = datasets.load("scan", root=tmp_path, pairs="image", min_count=1, val_split=None)
    assert (d.query.n_images, d.query.n_texts) == (5, 5) and (d.query.text.sum(1) == 30).all()


def test_clip_jsonl(tmp_path):
    rng = np.random.default_rng(12)
    for split, n_img in (("train", 6), ("valid", 3)):
        with open(tmp_path / f"{split}_imgs.img_feat.jsonl", "w") as f:
            for i in range(n_img):
                f.write(json.dumps({"image_id": 1000 + i, "feature": rng.standard_normal(8).tolist()}) + "\n")
        with open(tmp_path / f"{split}_texts.txt_feat.jsonl", "w") as ft, \
                open(tmp_path / f"{split}_texts.jsonl", "w") as fx:
            for t in range(n_img + 1):
                ft.write(json.dumps({"text_id": t, "feature": rng.standard_normal(8).tolist()}) + "\n")
                imgs = [1000 + t % n_img] + ([1000 + (t + 1) % n_img] if t == n_img else [])
                fx.write(json.dumps({"text_id": t, "text": "一只狗在草地上", "image_ids": imgs}, ensure_ascii=False) + "\n")
    d = datasets.load("clip-jsonl", root=tmp_path)
    assert (d.train.n_images, d.train.n_texts, d.query.n_images, d.query.n_texts) == (6, 7, 3, 4)
    assert d.meta.relevance == "pairing"
    # the last text of each split matches two images; ids as written in the files
    assert [d.query.pairing.images_of(t).tolist() for t in range(4)] == [[0], [1], [2], [0, 1]]
    assert d.query.image_ids.tolist() == [1000, 1001, 1002] and d.query.text_ids.tolist() == [0, 1, 2, 3]
    pairs = d.train.training_pairs()  # one aligned row per (text, image) pair, instance targets
    assert len(pairs) == 8 and pairs.labels.shape == (8, 6)


# --- protocols, split hash, cache -------------------------------------------------------------

def test_dcmh_protocol_is_seeded_disjoint_and_hashed(tmp_path):
    rng = np.random.default_rng(13)
    img, txt, lab = items(rng, 500)
    np.savez(tmp_path / "g.npz", image=img, text=txt, labels=lab)
    a = datasets.load("generic", path=tmp_path / "g.npz", n_query=50, n_train=200, seed=1)
    b = datasets.load("generic", path=tmp_path / "g.npz", n_query=50, n_train=200, seed=1)
    c = datasets.load("generic", path=tmp_path / "g.npz", n_query=50, n_train=200, seed=2)
    assert a.meta.split_hash == b.meta.split_hash != c.meta.split_hash
    s = a.meta.split_indices
    assert not set(s["query"]) & set(s["retrieval"]) and len(set(s["query"]) | set(s["retrieval"])) == 500
    v = datasets.load("generic", path=tmp_path / "g.npz", n_query=50, n_train=200, seed=1, n_validation=40)
    sv = v.meta.split_indices
    # Validation comes out of train; the query/retrieval split does not move.
    assert (sv["query"] == s["query"]).all() and (sv["retrieval"] == s["retrieval"]).all()
    assert set(sv["validation"]) | set(sv["train"]) == set(s["train"]) and len(sv["train"]) == 160
    assert not set(sv["validation"]) & set(sv["query"])
    assert v.meta.split_hash != a.meta.split_hash


def test_cache_builds_once_and_memory_maps(tmp_path):
    rng = np.random.default_rng(14)
    img, txt, lab = items(rng, 300, di=50)
    src = write_mat73(tmp_path / "FLICKR-25K.mat", {"images": img, "YAll": txt, "LAll": lab})
    kw = dict(root=tmp_path, n_query=30, n_train=100, cache=True, cache_dir=tmp_path / "cache")
    first = datasets.load("mirflickr25k", **kw)
    second = datasets.load("mirflickr25k", **kw)
    assert first.meta.info["built"] and not second.meta.info["built"]
    assert first.meta.info["sha256"][str(src)] == second.meta.info["sha256"][str(src)]
    entry = Path(first.meta.info["cache"])
    assert isinstance(np.load(entry / "image.npy", mmap_mode="r"), np.memmap)
    assert first.fingerprint() == second.fingerprint()
    plain = datasets.load("mirflickr25k", root=tmp_path, n_query=30, n_train=100, cache=False)
    assert plain.fingerprint() == first.fingerprint()
    img[0, 0] += 1.0  # an edited source gets a fresh entry, never the stale one
    write_mat73(src, {"images": img, "YAll": txt, "LAll": lab})
    os.utime(src, ns=(1, 1))
    third = datasets.load("mirflickr25k", **kw)
    assert third.meta.info["built"] and third.meta.info["cache_key"] != first.meta.info["cache_key"]


# --- bad input: each a DataError naming file, key and expectation ------------------------------

def test_truncated_and_non_mat_files(tmp_path):
    rng = np.random.default_rng(15)
    img, txt, lab = items(rng, 200, di=64)
    sio.savemat(tmp_path / "full.mat", {"image": img, "text": txt, "labels": lab})
    raw = (tmp_path / "full.mat").read_bytes()
    (tmp_path / "cut.mat").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut\.mat: cannot read as v5 .*truncated"):
        datasets.load("generic", path=tmp_path / "cut.mat")
    write_mat73(tmp_path / "full73.mat", {"image": img, "text": txt, "labels": lab})
    raw = (tmp_path / "full73.mat").read_bytes()
    (tmp_path / "cut73.mat").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut73\.mat: cannot read as v7\.3 .*truncated"):
        datasets.load("generic", path=tmp_path / "cut73.mat")
    (tmp_path / "notes.mat").write_text("these are not the features you are looking for\n")
    with pytest.raises(DataError, match=r"notes\.mat: not a MATLAB v5/v7\.3, HDF5 or \.npz file.*expected a header"):
        datasets.load("generic", path=tmp_path / "notes.mat")


def test_missing_key(tmp_path):
    rng = np.random.default_rng(16)
    img, txt, lab = items(rng, 30)
    sio.savemat(tmp_path / "raw_features.mat", {"I_tr": img[:20], "I_te": img[20:], "T_tr": txt[:20]})
    (tmp_path / "trainset_txt_img_cat.list").write_text("".join(f"t{i}\ti{i}\t{i % 10 + 1}\n" for i in range(20)))
    (tmp_path / "testset_txt_img_cat.list").write_text("".join(f"t{i}\ti{i}\t{i % 10 + 1}\n" for i in range(10)))
    with pytest.raises(DataError, match=r"raw_features\.mat: missing key 'T_te'; the file has keys \['I_te', 'I_tr', 'T_tr'\]"):
        datasets.load("wiki", root=tmp_path)
    sio.savemat(tmp_path / "g.mat", {"image": img, "text": txt, "tags": lab})
    with pytest.raises(DataError, match=r"g\.mat: missing key for labels; expected one of \['labels', .*'LAll'"):
        datasets.load("generic", path=tmp_path / "g.mat")


def test_mismatched_row_counts(tmp_path):
    rng = np.random.default_rng(17)
    img, txt, lab = items(rng, 100)
    np.savez(tmp_path / "m.npz", image=img, text=txt[:99], labels=lab)
    with pytest.raises(DataError, match=r"no item count shared by .*m\.npz:image \(100, 16\).*m\.npz:text \(99, 12\).*same number of rows"):
        datasets.load("generic", path=tmp_path / "m.npz")
    sio.savemat(tmp_path / "raw_features.mat", {"I_tr": img[:20], "I_te": img[20:30], "T_tr": txt[:20], "T_te": txt[20:30]})
    (tmp_path / "trainset_txt_img_cat.list").write_text("".join(f"t{i}\ti{i}\t1\n" for i in range(21)))
    (tmp_path / "testset_txt_img_cat.list").write_text("".join(f"t{i}\ti{i}\t1\n" for i in range(10)))
    with pytest.raises(DataError, match=r"raw_features\.mat:I_tr: shape \(20, 16\) has no axis of length 21; expected 21 items"):
        datasets.load("wiki", root=tmp_path)


def test_nan_and_inf_features(tmp_path):
    rng = np.random.default_rng(18)
    img, txt, lab = items(rng, 100)
    img[7, 3] = np.nan
    np.savez(tmp_path / "n.npz", image=img, text=txt, labels=lab)
    with pytest.raises(DataError, match=r"n\.npz:image: NaN/Inf values in 1 rows \(first: row 7\); expected finite features"):
        datasets.load("generic", path=tmp_path / "n.npz", n_query=10, n_train=20)
    img[7, 3] = 0
    txt[11, 0] = np.inf
    write_mat73(tmp_path / "i.mat", {"image": img, "text": txt, "labels": lab})
    with pytest.raises(DataError, match=r"i\.mat:text: NaN/Inf values in 1 rows \(first: row 11\)"):
        datasets.load("generic", path=tmp_path / "i.mat", n_query=10, n_train=20)


def test_label_rows_without_label(tmp_path):
    rng = np.random.default_rng(19)
    img, txt, lab = items(rng, 100, c=24)
    lab[[5, 9]] = 0
    sio.savemat(tmp_path / "mirflickr25k-xall-vgg.mat", {"XAll": img})
    sio.savemat(tmp_path / "mirflickr25k-yall.mat", {"YAll": txt})
    sio.savemat(tmp_path / "mirflickr25k-lall.mat", {"LAll": lab})
    with pytest.raises(DataError, match=r"mirflickr25k-lall\.mat:LAll: 2 label rows have no label \(first: row 5\); expected at least one"):
        datasets.load("mirflickr25k", root=tmp_path, n_query=10, n_train=20)
    lab[[5, 9]] = 1
    lab[3, 2] = 2
    sio.savemat(tmp_path / "mirflickr25k-lall.mat", {"LAll": lab})
    with pytest.raises(DataError, match=r"mirflickr25k-lall\.mat:LAll: multi-hot labels must be 0/1"):
        datasets.load("mirflickr25k", root=tmp_path, n_query=10, n_train=20)


def test_split_larger_than_data(tmp_path):
    rng = np.random.default_rng(20)
    img, txt, lab = items(rng, 100)
    np.savez(tmp_path / "small.npz", image=img, text=txt, labels=lab)
    with pytest.raises(DataError, match=r"small\.npz:image\): n_query = 2000 is larger than the data allows \(99\)"):
        datasets.load("generic", path=tmp_path / "small.npz")  # DCMH defaults: 2,000 queries
    with pytest.raises(DataError, match=r"small\.npz:image\): n_validation \(carved from train\) = 60 is larger"):
        datasets.load("generic", path=tmp_path / "small.npz", n_query=10, n_train=50, n_validation=60)


def test_unknown_protocol_and_missing_image_features(tmp_path):
    rng = np.random.default_rng(21)
    img, txt, lab = items(rng, 40)
    np.savez(tmp_path / "g.npz", image=img, text=txt, labels=lab)
    with pytest.raises(DataError, match=r"unknown protocol 'official'; this data set accepts \['dcmh', 'ucch'\]"):
        datasets.load("generic", path=tmp_path / "g.npz", protocol="official")
    sio.savemat(tmp_path / "mirflickr25k-yall.mat", {"YAll": txt})
    sio.savemat(tmp_path / "mirflickr25k-lall.mat", {"LAll": lab})
    with pytest.raises(DataError, match=r"no image features under .*mirflickr25k-xall-vgg\.mat.*image_path="):
        datasets.load("mirflickr25k", root=tmp_path)


def test_generic_query_database_file_draws_train_from_database(tmp_path):
    rng = np.random.default_rng(22)
    img, txt, lab = items(rng, 150)
    np.savez(tmp_path / "qd.npz", query_image=img[:30], query_text=txt[:30], query_labels=lab[:30],
             retrieval_image=img[30:], retrieval_text=txt[30:], retrieval_labels=lab[30:])
    d = datasets.load("generic", path=tmp_path / "qd.npz", n_train=60, seed=3)
    s = d.meta.split_indices
    assert len(d.train) == 60 and set(s["train"]) <= set(s["retrieval"]) and (s["query"] == np.arange(30)).all()
    with pytest.raises(DataError, match=r"n_train \(drawn from the retrieval set\) = 500 is larger than the data allows \(120\)"):
        datasets.load("generic", path=tmp_path / "qd.npz", n_train=500)


def test_cache_entry_follows_content_not_path(tmp_path):
    rng = np.random.default_rng(23)
    img, txt, lab = items(rng, 100)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for sub in ("a", "b"):  # the same bytes in two places
        write_mat73(tmp_path / sub / "NUS-WIDE-TC21.mat", {"image": img, "text": txt, "label": lab})
    kw = dict(n_query=10, n_train=30, cache=True, cache_dir=tmp_path / "cache")
    a = datasets.load("nus-wide-tc21", root=tmp_path / "a", **kw)
    b = datasets.load("nus-wide-tc21", root=tmp_path / "b", **kw)
    assert a.meta.info["built"] and not b.meta.info["built"] and a.meta.info["cache"] == b.meta.info["cache"]


def test_ucch_protocol_takes_the_last_rows_as_queries(tmp_path):
    rng = np.random.default_rng(24)
    db, te = items(rng, 90, c=7), items(rng, 20, c=7)
    sio.savemat(tmp_path / "iapr-tc12-rand.mat", {  # UCCH reads this file with scipy (v5)
        "VDatabase": db[0], "YDatabase": db[1], "databaseL": db[2], "VTest": te[0], "YTest": te[1], "testL": te[2]})
    d = datasets.load("iapr-tc12", root=tmp_path, protocol="ucch", n_query=20)
    np.testing.assert_array_equal(d.query.image, te[0])  # database then test, last 20 = the test rows
    assert d.train is d.retrieval and len(d.retrieval) == 90
    again = datasets.load("iapr-tc12", root=tmp_path, protocol="ucch", n_query=20, seed=9)
    assert again.meta.split_hash == d.meta.split_hash  # no randomness in this protocol
