"""Chinese-CLIP feature extraction (datasets.clip_features) from a local checkpoint: a cn_clip model
built from its own config format with random weights, on images and captions made here; the
jsonl it writes feeds runners.retrieve. Skipped where the optional cn_clip package is absent."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest

pytest.importorskip("cn_clip")
torch = pytest.importorskip("torch")

from datasets import DataError  # noqa: E402
from datasets import clip_features as cf  # noqa: E402
from runners import retrieve  # noqa: E402

TEXTS = ["一只红色的狗", "绿色的“草地”上", "蓝色天空", "Two DOGS 在跑"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small CLIP in cn_clip's config format (RN50.json + RBT3-chinese.json keys, smaller sizes),
    random weights, saved the way Chinese-CLIP's training saves checkpoints (DDP 'module.' keys)."""
    folder = tmp_path_factory.mktemp("cnclip")
    module, tokenizer, configs = cf.cn_clip_modules()
    info = json.loads((configs / "RN50.json").read_text()) | json.loads((configs / "RBT3-chinese.json").read_text())
    info.update(embed_dim=16, image_resolution=64, vision_layers="[1,1,1,1]", vision_width=8, text_hidden_size=32,
                text_intermediate_size=64, text_num_attention_heads=2, text_num_hidden_layers=1, text_max_position_embeddings=64)
    (folder / "tiny.json").write_text(json.dumps(info))
    torch.manual_seed(0)
    model = module.CLIP(**cf.model_info("", "", folder / "tiny.json"), tokenizer=tokenizer)
    module.convert_weights(model)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 1, "step": 10},
               folder / "tiny.pt")
    from PIL import Image

    rows = []
    for i, (size, color) in enumerate((((90, 60), (220, 30, 30)), ((64, 64), (20, 200, 40)), ((50, 120), (10, 20, 230)))):
        img = Image.new("RGB", size, color)
        img.putpixel((3, 3), (255, 255, 255))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        rows.append(f"{1000 + i}\t{base64.urlsafe_b64encode(buf.getvalue()).decode()}")
    (folder / "valid_imgs.tsv").write_text("\n".join(rows) + "\n")
    with open(folder / "valid_texts.jsonl", "w", encoding="utf-8") as f:
        for t, text in enumerate(TEXTS):
            f.write(json.dumps({"text_id": t, "text": text, "image_ids": [1000 + t % 3]}, ensure_ascii=False) + "\n")
    return folder, model.float().eval()


def test_extract_writes_the_jsonl_layout_from_a_local_checkpoint(tiny, tmp_path, capsys):
    folder, model = tiny
    code = cf.main(["--checkpoint", str(folder / "tiny.pt"), "--model-config", str(folder / "tiny.json"),
                    "--images", str(folder / "valid_imgs.tsv"), "--texts", str(folder / "valid_texts.jsonl"), "--batch-size", "2"])
    assert code == 0, capsys.readouterr().err
    imgs = [json.loads(x) for x in (folder / "valid_imgs.img_feat.jsonl").read_text().splitlines()]
    txts = [json.loads(x) for x in (folder / "valid_texts.txt_feat.jsonl").read_text().splitlines()]
    assert [o["image_id"] for o in imgs] == [1000, 1001, 1002] and [o["text_id"] for o in txts] == [0, 1, 2, 3]
    got_i, got_t = np.array([o["feature"] for o in imgs]), np.array([o["feature"] for o in txts])
    assert got_i.shape == (3, 16) and np.allclose(np.linalg.norm(got_t, axis=1), 1, atol=1e-6)
    # reference: cn_clip's model on inputs built here from its documented transform and tokenizer
    from PIL import Image

    _, tok, _ = cf.cn_clip_modules()
    pixels = []
    for line in (folder / "valid_imgs.tsv").read_text().splitlines():
        img = Image.open(io.BytesIO(base64.urlsafe_b64decode(line.split("\t")[1]))).resize((64, 64), Image.BICUBIC).convert("RGB")
        x = (np.asarray(img) / 255.0 - np.array([0.48145466, 0.4578275, 0.40821073])) / np.array([0.26862954, 0.26130258, 0.27577711])
        pixels.append(x.transpose(2, 0, 1))
    tokens = cf.tokenize(TEXTS)
    assert tokens.shape == (4, 52)
    assert tokens[0, :8].tolist() == [tok.vocab["[CLS]"]] + [tok.vocab[c] for c in "一只红色的狗"] + [tok.vocab["[SEP]"]]
    assert not tokens[0, 8:].any()  # zero padding
    assert tokens[1].tolist().count(tok.vocab['"']) == 2  # curly quotes straightened
    assert tokens[3, 1] == tok.vocab["two"]  # lower-cased
    assert cf.tokenize(["一" * 80], context_length=10)[0].tolist() == [tok.vocab["[CLS]"]] + [tok.vocab["一"]] * 8 + [tok.vocab["[SEP]"]]
    with torch.no_grad():
        ref_i = model(torch.tensor(np.array(pixels), dtype=torch.float32), None)
        ref_t = model(None, torch.from_numpy(tokens))
    ref_i, ref_t = (f / f.norm(dim=-1, keepdim=True) for f in (ref_i, ref_t))
    np.testing.assert_allclose(got_i, ref_i.numpy(), atol=1e-5)
    np.testing.assert_allclose(got_t, ref_t.numpy(), atol=1e-5)
    # the files feed the retrieval pipeline as Chinese-CLIP's own extract_features output would
    result = retrieve.retrieve(folder / "valid_imgs.img_feat.jsonl", folder / "valid_texts.txt_feat.jsonl",
                               folder / "valid_texts.jsonl", top=3, output_dir=tmp_path)
    assert len(retrieve.read_predictions(result["files"]["t2i_predictions"], "t2i", k=3)) == 4
    assert set(result["scores"]["t2i"]["scoreJson"]) == {"score", "mean_recall", "r1", "r5", "r10"}
    # a folder of image files gives the same features (ids = file stems)
    (tmp_path / "imgs").mkdir()
    for line in (folder / "valid_imgs.tsv").read_text().splitlines():
        image_id, b64 = line.split("\t")
        (tmp_path / "imgs" / f"{image_id}.png").write_bytes(base64.urlsafe_b64decode(b64))
    cf.extract_features(folder / "tiny.pt", images=tmp_path / "imgs", image_output=tmp_path / "f.jsonl",
                        model_config=folder / "tiny.json")
    again = [json.loads(x) for x in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert [o["image_id"] for o in again] == [1000, 1001, 1002]
    np.testing.assert_allclose(np.array([o["feature"] for o in again]), got_i, atol=1e-6)


def test_clear_errors_for_missing_or_unfitting_checkpoints(tiny, tmp_path):
    folder, _ = tiny
    with pytest.raises(DataError, match=r"nope\.pt: checkpoint not found; expected a local Chinese-CLIP \.pt file \(nothing is downloaded\)"):
        cf.extract_features(tmp_path / "nope.pt", texts=folder / "valid_texts.jsonl", model_config=folder / "tiny.json")
    assert cf.main(["--checkpoint", str(tmp_path / "nope.pt"), "--texts", str(folder / "valid_texts.jsonl")]) == 2
    with pytest.raises(DataError, match=r"tiny\.pt: weights do not fit RN50@RBT3-chinese \(Error\(s\) in loading state_dict"):
        cf.load_model(folder / "tiny.pt", "RN50", "RBT3-chinese")  # the full-size config: shapes differ
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"junk\.pt: not a loadable checkpoint"):
        cf.load_model(tmp_path / "junk.pt", model_config=folder / "tiny.json")
    with pytest.raises(DataError, match=r"cn_clip has no model config 'ViT-X'"):
        cf.model_info("ViT-X", "RBT3-chinese")
    (tmp_path / "bad.tsv").write_text("1000 no tab\n")
    with pytest.raises(DataError, match=r"bad\.tsv: line 1 has no tab; expected 'id<TAB>base64 image'"):
        cf.extract_features(folder / "tiny.pt", images=tmp_path / "bad.tsv", model_config=folder / "tiny.json")
