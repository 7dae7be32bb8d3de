"""Caption retrieval numbers through the loaders and the runners equal the peers' own scripts
(Chinese-CLIP's make_topk_predictions + evaluation(_tr).py, SCAN's i2t / t2i / evalrank), held
against the independent references in caption_fixtures.py, on fixtures in their layouts."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import datasets
from caption_fixtures import (
    _lines, clip_reference, scan_captions, scan_evalrank, scan_i2t, scan_t2i, write_clip_split, write_scan_split,
)
from metrics.recall import caption_ranks, caption_retrieval, clip_output, rank_summary, top_k
from runners import evaluate as evaluate_cli
from runners import retrieve
from runners.captions import split_caption_values


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    write_clip_split(folder, "train", 1, n_images=30, n_texts=70, n_distractors=4)
    written = write_clip_split(folder, "valid", 2)
    return folder, written


def test_clip_retrieve_equals_chinese_clip_scripts(clip_folder, tmp_path, capsys):
    folder, written = clip_folder
    ref = clip_reference(folder, "valid")
    # the fixture has what the issue names: distractor images, texts with several images, ties
    assert written["distractors"] and any(len(g) > 1 for g in written["gt"])
    code = retrieve.main(["--image-feats", str(folder / "valid_imgs.img_feat.jsonl"),
                          "--text-feats", str(folder / "valid_texts.txt_feat.jsonl"),
                          "--texts", str(folder / "valid_texts.jsonl"), "--output-dir", str(tmp_path),
                          "--tr-annotation", str(tmp_path / "valid_texts.tr.jsonl")])
    assert code == 0, capsys.readouterr().err
    # predictions line for line, in make_topk_predictions' format (ids as written, ties by file order)
    assert _lines(tmp_path / "valid_predictions.jsonl") == ref["t2i_predictions"]
    assert _lines(tmp_path / "valid_tr_predictions.jsonl") == ref["i2t_predictions"]
    # scores to the last digit, output.json shape
    assert json.loads((tmp_path / "output.json").read_text()) == ref["t2i"]
    assert json.loads((tmp_path / "output_tr.json").read_text()) == ref["i2t"]
    assert {o["image_id"]: o["text_ids"] for o in _lines(tmp_path / "valid_texts.tr.jsonl")} == ref["tr_annotation"]
    # far from the row-per-pair numbers the issue reported: real recall, both ways
    assert 0 < ref["t2i"]["scoreJson"]["r1"] < ref["t2i"]["scoreJson"]["r10"] < 100
    out = capsys.readouterr().out
    assert "rsum:" in out and "Text to image:" in out


def test_clip_predictions_round_trip_and_string_ids(tmp_path):
    written = write_clip_split(tmp_path, "valid", 3, n_images=20, n_texts=40, n_distractors=3, string_ids=True)
    ref = clip_reference(tmp_path, "valid")
    result = retrieve.retrieve(tmp_path / "valid_imgs.img_feat.jsonl", tmp_path / "valid_texts.txt_feat.jsonl",
                               tmp_path / "valid_texts.jsonl", output_dir=tmp_path / "out")
    assert result["scores"]["t2i"] == ref["t2i"] and result["scores"]["i2t"] == ref["i2t"]
    back = retrieve.read_predictions(result["files"]["t2i_predictions"], "t2i", k=10)
    assert list(back) == [p["text_id"] for p in ref["t2i_predictions"]]  # text-feature file order
    assert all(back[p["text_id"]] == p["image_ids"] for p in ref["t2i_predictions"])
    assert all(isinstance(i, str) for ids in back.values() for i in ids) and set(written["image_ids"]) >= set(back[next(iter(back))])
    tr = retrieve.read_predictions(result["files"]["i2t_predictions"], "i2t", k=10)
    assert len(tr) == 20  # every image of the image-feature file gets predictions, distractors too
    with pytest.raises(datasets.DataError, match=r"line 1 has 10 text_ids; expected 5"):
        retrieve.read_predictions(result["files"]["i2t_predictions"], "i2t", k=5)


def test_clip_loader_route_equals_reference(clip_folder):
    folder, _ = clip_folder
    ref = clip_reference(folder, "valid")
    d = datasets.load("clip-jsonl", root=folder)
    split = d.query
    assert (split.n_images, split.n_texts) == (50, 120)
    p = split.pairing
    got = caption_retrieval(split.image, split.text, p.indptr, p.images, metric="dot", return_ranks=True)
    assert clip_output(got["ranks"]["t2i"][1]) == ref["t2i"] and clip_output(got["ranks"]["i2t"][1]) == ref["i2t"]
    values = split_caption_values(split.image, split.text, split, metric="dot")
    for direction in ("t2i", "i2t"):
        sj = ref[direction]["scoreJson"]
        assert [values[f"recall_at_{k}_{direction}"] for k in (1, 5, 10)] == pytest.approx([sj["r1"], sj["r5"], sj["r10"]], abs=1e-12)
        assert values[f"mean_recall_{direction}"] == pytest.approx(sj["mean_recall"], abs=1e-12)
    assert got["i2t"]["n_queries"] == 40  # distractor images are no i2t queries (evaluation_tr reads the .tr.jsonl)


def test_ranks_and_top_k_agree_with_brute_force_under_both_tie_rules():
    rng = np.random.default_rng(5)
    img = rng.integers(-1, 2, (15, 3)).astype(np.float32)  # few distinct rows: ties everywhere
    txt = rng.integers(-1, 2, (40, 3)).astype(np.float32)
    owner = [sorted({int(t % 12), int(t * 5 % 15)}) for t in range(40)]
    indptr = np.concatenate([[0], np.cumsum([len(o) for o in owner])])
    flat = np.array([j for o in owner for j in o])
    s = txt.astype(np.float64) @ img.T.astype(np.float64)
    for ties, order_of in (("first", lambda r: sorted(range(15), key=lambda j: -r[j])),
                           ("last", lambda r: list(np.argsort(r, kind="stable")[::-1]))):
        ranks = caption_ranks(txt, img, indptr, flat, ties=ties, chunk_size=7).numpy()
        orders = [order_of(s[t]) for t in range(40)]
        assert ranks.tolist() == [min(orders[t].index(j) for j in owner[t]) for t in range(40)]
        assert top_k(txt, img, 6, ties=ties, chunk_size=9).tolist() == [o[:6] for o in orders]
    codes = np.where(rng.standard_normal((15, 16)) >= 0, 1.0, -1.0)
    tcodes = np.where(rng.standard_normal((40, 16)) >= 0, 1.0, -1.0)
    hamming = caption_ranks(tcodes, (codes + 1) / 2, indptr, flat, metric="hamming").numpy()  # 0/1 codes accepted
    dist = (16 - tcodes @ codes.T) / 2
    assert hamming.tolist() == [min(sorted(range(15), key=lambda j: dist[t, j]).index(j) for j in owner[t]) for t in range(40)]


def test_rank_summary_is_scans_arithmetic():
    ranks = np.array([0, 3, 12, 1, 0, 7, 30, 2])
    got = rank_summary(ranks)
    assert got["r1"] == 100.0 * 2 / 8 and got["r5"] == 100.0 * 5 / 8 and got["r10"] == 100.0 * 6 / 8
    assert got["medr"] == np.floor(np.median(ranks)) + 1 == 3.0 and got["meanr"] == ranks.mean() + 1
    with pytest.raises(ValueError, match="each k must be a positive integer"):
        rank_summary(ranks, ks=(0,))


@pytest.mark.parametrize("repeated", [False, True])
def test_scan_embeddings_through_evaluate_equal_scan(tmp_path, repeated, capsys):
    rng = np.random.default_rng(7)
    n = 24
    ims = rng.standard_normal((n, 16)).astype(np.float32)
    caps = np.repeat(ims, 5, axis=0) + rng.normal(scale=1.5, size=(5 * n, 16)).astype(np.float32)
    np.save(tmp_path / "img_embs.npy", np.repeat(ims, 5, axis=0) if repeated else ims)
    np.save(tmp_path / "cap_embs.npy", caps)
    ref = scan_evalrank(np.repeat(ims, 5, axis=0).astype(np.float64), caps.astype(np.float64))  # no ties: SCAN's own sort
    code = evaluate_cli.main(["--image-feats", str(tmp_path / "img_embs.npy"), "--text-feats", str(tmp_path / "cap_embs.npy"),
                              "--json"])
    assert code == 0, capsys.readouterr().err
    got = json.loads(capsys.readouterr().out)
    assert [got[f"{m}_i2t"] for m in ("recall_at_1", "recall_at_5", "recall_at_10", "medr", "meanr")] == list(ref["r"])
    assert [got[f"{m}_t2i"] for m in ("recall_at_1", "recall_at_5", "recall_at_10", "medr", "meanr")] == list(ref["ri"])
    assert got["rsum"] == ref["rsum"]
    assert got["image_layout"].startswith("5N rows" if repeated else f"{n} images x 5")


def test_scan_loader_codes_equal_scan_with_ties(tmp_path):
    rng = np.random.default_rng(8)
    for split, n, repeated in (("train", 12, True), ("dev", 5, False), ("test", 20, True)):
        write_scan_split(tmp_path, split, rng.standard_normal((n, 8)).astype(np.float32), scan_captions(rng, n), repeated)
    d = datasets.load("scan", root=tmp_path, min_count=1)
    test = d.query
    assert (test.n_images, test.n_texts) == (20, 100) and (d.train.n_images, d.train.n_texts) == (12, 60)
    assert d.meta.info["layouts"]["test"].startswith("5N rows: 20 images")
    assert (test.pairing.images == np.arange(100) // 5).all()
    proj_i, proj_t = rng.standard_normal((8, 6)), rng.standard_normal((test.text.shape[1], 6))
    ci, ct = np.where(test.image @ proj_i >= 0, 1.0, -1.0), np.where(test.text @ proj_t >= 0, 1.0, -1.0)  # 6 bits: ties
    sims = ci @ ct.T
    # SCAN's argsort(...)[::-1] with a stable sort = ties to the later row ("last")
    values = split_caption_values(ci, ct, test, metric="hamming", ties="last")
    r, ri = scan_i2t(ci, sims, "stable"), scan_t2i(ci, sims, "stable")
    assert [values[f"{m}_i2t"] for m in ("recall_at_1", "recall_at_5", "recall_at_10", "medr", "meanr")] == list(r)
    assert [values[f"{m}_t2i"] for m in ("recall_at_1", "recall_at_5", "recall_at_10", "medr", "meanr")] == list(ri)
    assert values["rsum"] == r[0] + r[1] + r[2] + ri[0] + ri[1] + ri[2]
    first = split_caption_values(ci, ct, test, metric="hamming")  # the harness default: ties to the earlier row
    assert first["meanr_i2t"] != values["meanr_i2t"] and first["meanr_t2i"] != values["meanr_t2i"]  # 6 bits: ties matter


def test_coco_five_fold_1k_equals_scan_fold5(tmp_path):
    rng = np.random.default_rng(9)
    n, fold = 20, 4  # 5 folds of 4 images (MS-COCO: 5 x 1,000)
    ims = rng.standard_normal((n, 8)).astype(np.float32)
    for split, m in (("train", 10), ("dev", 4)):
        write_scan_split(tmp_path, split, rng.standard_normal((m, 8)).astype(np.float32), scan_captions(rng, m), True)
    write_scan_split(tmp_path, "test", ims, scan_captions(rng, n), True)
    d = datasets.load("scan", root=tmp_path, min_count=1, protocol="coco-1k", fold_size=fold)
    assert d.meta.info["eval_folds"] == {"n_folds": 5, "fold_size": fold}
    test = d.query
    codes_i = np.where(test.image @ rng.standard_normal((8, 5)) >= 0, 1.0, -1.0)
    codes_t = np.where(test.text @ rng.standard_normal((test.text.shape[1], 5)) >= 0, 1.0, -1.0)
    values = split_caption_values(codes_i, codes_t, test, metric="hamming", ties="last", folds=d.meta.info["eval_folds"])
    ref = scan_evalrank(np.repeat(codes_i, 5, axis=0), codes_t, fold5=True, fold_captions=5 * fold, kind="stable")
    names = ("recall_at_1", "recall_at_5", "recall_at_10", "medr", "meanr")
    assert [values[f"{m}_i2t"] for m in names] == list(ref["r"])
    assert [values[f"{m}_t2i"] for m in names] == list(ref["ri"])
    assert values["rsum"] == ref["rsum"] and values["mean_recall_i2t"] == ref["ar"] and values["mean_recall_t2i"] == ref["ari"]
    full = scan_evalrank(np.repeat(codes_i, 5, axis=0), codes_t, kind="stable")  # the 5K protocol on the same codes
    assert [values[f"{m}_full_t2i"] for m in names] == list(full["ri"]) and values["rsum_full"] == full["rsum"]
    with pytest.raises(datasets.DataError, match="needs 5 folds of 1000 images"):
        datasets.load("scan", root=tmp_path, min_count=1, protocol="coco-1k")


def test_runner_evaluation_branch_reports_caption_numbers(tmp_path):
    from methods.base import Encoder
    from runners.scoring import evaluate_encoder

    folder = tmp_path / "clip"
    write_clip_split(folder, "train", 1, n_images=20, n_texts=40, n_distractors=2)
    write_clip_split(folder, "valid", 2)
    data = datasets.load("clip-jsonl", root=folder)

    class Signs(Encoder):  # ±1 codes: the sign of the features themselves (0 -> +1)
        bits = 6

        def encode(self, modality, features):
            return torch.where(torch.as_tensor(features) >= 0, 1.0, -1.0)

        def embed(self, modality, features):
            return None

    values = evaluate_encoder(Signs(), data, curves=False).values
    split = data.query
    expected = split_caption_values(np.where(split.image >= 0, 1.0, -1.0), np.where(split.text >= 0, 1.0, -1.0), split)
    assert {k: values[k] for k in expected} == expected
    assert {"recall_at_1_i2t", "recall_at_10_t2i", "mean_recall_t2i", "medr_i2t", "meanr_t2i", "rsum"} <= set(values)
    assert 10 < values["rsum"] <= 600  # percent


def test_evaluate_reads_clip_jsonl_and_retrieve_works_without_ground_truth(clip_folder, tmp_path, capsys):
    folder, _ = clip_folder
    ref = clip_reference(folder, "valid")
    feats = ["--image-feats", str(folder / "valid_imgs.img_feat.jsonl"), "--text-feats", str(folder / "valid_texts.txt_feat.jsonl")]
    assert evaluate_cli.main(feats + ["--texts", str(folder / "valid_texts.jsonl"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    for direction in ("t2i", "i2t"):
        sj = ref[direction]["scoreJson"]
        assert [got[f"recall_at_{k}_{direction}"] for k in (1, 5, 10)] == pytest.approx([sj["r1"], sj["r5"], sj["r10"]], abs=1e-12)
    assert got["image_layout"] == "50 images, 120 texts" and got["medr_t2i"] >= 1
    assert evaluate_cli.main(feats) == 2 and "need their ground truth, --texts" in capsys.readouterr().err
    # the test split of a public release: predictions only, no scores
    assert retrieve.main(feats + ["--output-dir", str(tmp_path), "--top-k", "3"]) == 0
    assert len(_lines(tmp_path / "valid_predictions.jsonl")) == 120 and not (tmp_path / "output.json").exists()
    assert all(len(p["text_ids"]) == 3 for p in _lines(tmp_path / "valid_tr_predictions.jsonl"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_caption_numbers_on_cuda_equal_cpu():
    rng = np.random.default_rng(10)
    img = torch.from_numpy(rng.integers(-2, 3, (30, 6)) / 2)
    txt = torch.from_numpy(rng.integers(-2, 3, (150, 6)) / 2)
    indptr, images = np.arange(151), np.arange(150) // 5
    for metric in ("dot", "hamming"):
        a, b = (img >= 0).float() if metric == "hamming" else img, (txt >= 0).float() if metric == "hamming" else txt
        cpu = caption_retrieval(a, b, indptr, images, metric=metric)
        cuda = caption_retrieval(a.cuda(), b.cuda(), indptr, images, metric=metric)
        assert cpu == cuda
        assert (top_k(b.cuda(), a.cuda(), 7, metric=metric) == top_k(b, a, 7, metric=metric)).all()
