"""Loaders and the caption pipeline on the real data in ../shared/data (skipped when absent).

Expected numbers come from each folder's README.txt (published counts), not from this code.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

import datasets
from datasets import mirflickr, multiview
from datasets import text as tx
from test_datasets_formats import write_mat73

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("XMH_DATA_ROOT") or Path(__file__).resolve().parents[2] / "shared" / "data")


def need(folder: str) -> Path:
    path = DATA / folder
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is absent (set XMH_DATA_ROOT to the folder holding {folder}/)")
    return path


# --- Wikipedia -------------------------------------------------------------------------------

WIKI_TRAIN_COUNTS = [138, 272, 244, 248, 202, 178, 186, 144, 214, 347]
WIKI_TEST_COUNTS = [34, 88, 96, 85, 65, 58, 51, 41, 71, 104]


def test_wiki_both_packagings_identical_official_split():
    root = need("wiki")
    raw = datasets.load("wiki", root=root, packaging="raw")
    pkg = datasets.load("wiki", root=root, packaging="wikidata")
    assert raw.meta.info["packaging"] == "raw" and pkg.meta.info["packaging"] == "wikidata"
    for name in ("train", "query", "retrieval"):
        a, b = getattr(raw, name), getattr(pkg, name)
        for field in ("image", "text", "labels"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert raw.fingerprint() == pkg.fingerprint() and raw.meta.split_hash == pkg.meta.split_hash
    assert (len(raw.train), len(raw.query)) == (2173, 693) and raw.query is raw.retrieval
    assert raw.train.labels.sum(0).astype(int).tolist() == WIKI_TRAIN_COUNTS
    assert raw.query.labels.sum(0).astype(int).tolist() == WIKI_TEST_COUNTS
    assert raw.single_label and (raw.image_dim, raw.text_dim) == (128, 10)
    assert raw.meta.info["class_names"][:3] == ["art", "biology", "geography"]
    # Rows are items: image rows are L1-normalised histograms, text rows LDA proportions.
    np.testing.assert_allclose(raw.train.image.sum(1), 1, atol=1e-4)
    np.testing.assert_allclose(raw.query.text.sum(1), 1, atol=1e-4)
    # The split indices are positions in [train rows; test rows].
    assert (raw.meta.split_indices["query"] == np.arange(2173, 2866)).all()
    ref = sio.loadmat(root / "raw_features.mat")
    np.testing.assert_array_equal(raw.query.image, ref["I_te"].astype(np.float32))


def test_wiki_as_matlab_v73_reads_the_same(tmp_path):
    root = need("wiki")
    ref = sio.loadmat(root / "wikiData.mat")
    write_mat73(tmp_path / "wikiData.mat", {k: ref[k] for k in ("I_tr", "I_te", "T_tr", "T_te", "L_tr", "L_te")})
    a = datasets.load("wiki", root=root, packaging="wikidata")
    b = datasets.load("wiki", path=tmp_path / "wikiData.mat")
    assert b.meta.info["packaging"] == "wikidata" and a.fingerprint() == b.fingerprint()


def test_wiki_validation_from_train_only():
    root = need("wiki")
    d = datasets.load("wiki", root=root, n_validation=217, seed=5)
    s = d.meta.split_indices
    assert len(s["validation"]) == 217 and len(s["train"]) == 2173 - 217
    assert set(s["validation"]) <= set(range(2173)) and not set(s["validation"]) & set(s["query"])
    again = datasets.load("wiki", root=root, n_validation=217, seed=5)
    other = datasets.load("wiki", root=root, n_validation=217, seed=6)
    assert again.meta.split_hash == d.meta.split_hash != other.meta.split_hash


# --- MIRFlickr-25K (labels and tags only) ----------------------------------------------------

MIR_LABEL_COUNTS = [2647, 179, 644, 986, 3230, 581, 4614, 1554, 813, 6320, 704, 4743, 2243, 7848, 7413, 2740,
                    811, 1133, 6818, 8463, 1840, 2450, 3981, 2885]


def test_mirflickr_split_files_labels_and_tags():
    root = need("mirflickr25k")
    labels, tags, sources = mirflickr.read_labels_text(root=root)
    assert labels.shape == (20015, 24) and tags.shape == (20015, 1386)
    assert sources["labels"].endswith("mirflickr25k-lall.mat:LAll")
    assert labels.sum(0).tolist() == MIR_LABEL_COUNTS
    per_row = labels.sum(1)
    assert (per_row.min(), per_row.max(), round(float(per_row.mean()), 2)) == (1, 14, 3.78)
    df = tags.astype(bool).sum(0)
    assert (df.min(), df.max()) == (17, 1448)
    assert tags.astype(bool).sum(1).min() == 1


def test_mirflickr_dcmh_protocol_on_real_labels(tmp_path):
    """The registered loader on the real tag/label files; image features are a stand-in file
    (the shipped copy has none), so only protocol, labels and tags are checked here."""
    root = need("mirflickr25k")
    stand_in = np.random.default_rng(0).standard_normal((20015, 16)).astype(np.float32)
    write_mat73(tmp_path / "mirflickr25k-xall-vgg.mat", {"XAll": stand_in})
    d = datasets.load("mirflickr25k", root=root, image_path=tmp_path / "mirflickr25k-xall-vgg.mat", seed=0)
    labels, tags, _ = mirflickr.read_labels_text(root=root)
    s = d.meta.split_indices
    assert d.meta.sizes == {"query": 2000, "retrieval": 18015, "train": 10000}
    assert not set(s["query"]) & set(s["retrieval"]) and set(s["train"]) <= set(s["retrieval"])
    np.testing.assert_array_equal(d.query.labels, labels[s["query"]])
    np.testing.assert_array_equal(d.retrieval.text, tags[s["retrieval"]])
    assert not d.single_label and d.num_classes == 24
    # Multi-label relevance (share >= 1 label) is dense on this set: most pairs are relevant
    # through the frequent concepts, far above what single-label sets give.
    rel = (d.query.labels[:200] @ d.retrieval.labels.T) > 0
    assert 0.3 < rel.mean() < 0.9


# --- UCI mfeat as a multi-view set -----------------------------------------------------------

def test_uci_mfeat_views_and_pairs():
    root = need("uci-mfeat")
    feats, digits = multiview.read_views(root=root)
    dims = {v: x.shape[1] for v, x in feats.items()}
    assert dims == {"fac": 216, "fou": 76, "kar": 64, "mor": 6, "pix": 240, "zer": 47}
    assert all(x.shape[0] == 2000 for x in feats.values())
    assert np.bincount(digits).tolist() == [200] * 10
    for img_view, txt_view in (("pix", "fou"), ("mor", "zer")):
        d = datasets.load("uci-mfeat", root=root, image_view=img_view, text_view=txt_view, seed=1)
        q = d.meta.split_indices["query"]
        np.testing.assert_allclose(d.query.image, feats[img_view][q], rtol=1e-6)
        np.testing.assert_allclose(d.query.text, feats[txt_view][q], rtol=1e-6)
        assert (d.query.labels.argmax(1) == digits[q]).all() and d.single_label
        assert d.meta.sizes == {"query": 400, "retrieval": 1600, "train": 1000}


# --- Pascal Sentences captions through the text pipeline -------------------------------------

def test_pascal_captions_pipeline():
    root = need("pascal-sentences")
    caps, cats = tx.read_captions(root / "pascal_sentences.json")
    assert len(caps) == 1000 and sum(len(c) for c in caps.values()) == 4998
    assert Counter(cats.values()) == {c: 50 for c in set(cats.values())} and len(set(cats.values())) == 20
    docs = [tx.join_tokens(c) for c in caps.values()]
    counts = tx.count_words(docs)
    vocab = tx.build_vocabulary(counts, min_count=2)
    assert min(vocab.counts) >= 2 and all(counts[w] == 1 for w in counts if w not in vocab.index)
    assert vocab.words[:3] == ["a", "the", "in"]
    small = tx.build_vocabulary(counts, min_count=2, max_size=500)
    assert small.words == vocab.words[:500]
    bow = tx.bag_of_words(docs, vocab)
    assert bow.shape == (1000, len(vocab))
    in_vocab = np.array([sum(t in vocab.index for t in d) for d in docs])
    np.testing.assert_array_equal(bow.sum(1), in_vocab)
    assert (bow.sum(1) > 0).all()
    seq = tx.index_sequences(docs, small, max_len=30)
    assert seq.shape == (1000, 30)
    first = [t if t in small.index else "<unk>" for t in docs[0][:30]]
    assert tx.decode(seq[0], small) == first


def test_text_command_line(tmp_path):
    root = need("pascal-sentences")
    src = root / "pascal_sentences.json"
    run = lambda *a: subprocess.run([sys.executable, "-m", "datasets.text", *a], cwd=REPO,
                                    capture_output=True, text=True, timeout=60)
    helped = run("--help")
    assert helped.returncode == 0 and all(c in helped.stdout for c in ("split", "stats", "vocab", "encode"))
    split = run("split", str(src), "--per-class", "30", "10", "10", "--seed", "1", "--out", str(tmp_path / "s.json"))
    assert split.returncode == 0, split.stderr
    parts = json.loads((tmp_path / "s.json").read_text())
    caps, cats = tx.read_captions(src)
    assert {p: len(v) for p, v in parts.items()} == {"train": 600, "val": 200, "test": 200}
    assert set(parts["train"]).isdisjoint(parts["test"]) and set(parts["val"]).isdisjoint(parts["test"])
    assert Counter(cats[k] for k in parts["test"]) == {c: 10 for c in set(cats.values())}
    built = run("vocab", str(src), "--items", str(tmp_path / "s.json"), "--min-count", "3", "--max-size", "800",
                "--out", str(tmp_path / "v.json"))
    assert built.returncode == 0, built.stderr
    vocab = tx.Vocabulary.from_json((tmp_path / "v.json").read_text())
    train_counts = tx.count_words(tx.join_tokens(caps[k]) for k in parts["train"])
    assert len(vocab) == 800 and min(vocab.counts) >= 3
    assert all(train_counts[w] == c for w, c in zip(vocab.words, vocab.counts))  # built on train items only
    enc = run("encode", str(src), "--vocab", str(tmp_path / "v.json"), "--mode", "bow", "--binary",
              "--out", str(tmp_path / "b.npz"))
    assert enc.returncode == 0, enc.stderr
    z = np.load(tmp_path / "b.npz")
    assert z["bow"].shape == (1000, 800) and set(np.unique(z["bow"])) <= {0.0, 1.0}
    assert np.bincount(z["labels"]).tolist() == [50] * 20
    bad = run("vocab", str(src), "--min-count", "100000", "--out", str(tmp_path / "x.json"))
    assert bad.returncode == 2 and "no word occurs >= 100000 times" in bad.stderr
    too_many = run("split", str(src), "--per-class", "40", "10", "10", "--out", str(tmp_path / "x.json"))
    assert too_many.returncode == 2 and "per-class split [40, 10, 10]" in too_many.stderr and "is larger" in too_many.stderr


# --- pipeline pieces that need no data -------------------------------------------------------

def test_tokenize_split_and_vocabulary_rules():
    assert tx.tokenize("A man's dog, RUNNING on 2 legs!") == ["a", "man's", "dog", "running", "on", "2", "legs"]
    assert tx.tokenize("一只狗 runs 在草地") == ["一", "只", "狗", "runs", "在", "草", "地"]
    assert tx.split_sentences("A dog runs. A cat sits!\nThe end") == ["A dog runs.", "A cat sits!", "The end"]
    v = tx.build_vocabulary(Counter({"b": 3, "a": 3, "c": 1, "d": 2}), min_count=2, max_size=2)
    assert v.words == ["a", "b"]  # frequency, then alphabetical
    with pytest.raises(datasets.DataError, match="min_count = 0; expected >= 1"):
        tx.build_vocabulary(Counter({"a": 1}), min_count=0)
    bow = tx.bag_of_words(["a a b zz"], v)
    assert bow.tolist() == [[2.0, 1.0]]
    assert tx.index_sequences(["b zz a"], v).tolist() == [[3, 1, 2]]
