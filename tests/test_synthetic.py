"""The synthetic presets: shaped like the real sets, deterministic, and neither trivial nor noise."""
import numpy as np
import pytest
import torch

import datasets
import metrics
from datasets.synthetic import MIRFLICKR_LABEL_FREQ


@pytest.fixture(scope="module")
def flickr():
    return datasets.load("synthetic-mirflickr")


def test_mirflickr_preset_has_the_published_shape(flickr):
    d = flickr
    assert (len(d.query), len(d.retrieval)) == (2000, 18015)  # DCMH protocol
    assert len(d.train) + len(d.validation) == 10000           # 10,000 training items, validation carved from them
    assert (d.image_dim, d.text_dim, d.num_classes) == (4096, 1386, 24)
    labels = np.concatenate([d.query.labels, d.retrieval.labels])
    assert abs(labels.sum(1).mean() - 3.78) < 0.15             # ~3.8 labels per item
    assert (d.retrieval.image >= 0).all()                      # fc7-like: after ReLU
    assert set(np.unique(d.retrieval.text)) == {0.0, 1.0}      # binary tags
    assert 3.0 < d.retrieval.text.sum(1).mean() < 7.0 and d.retrieval.text.sum(1).min() >= 1
    # Training and query items are disjoint; training comes from retrieval.
    assert not d.single_label


def test_wiki_preset_has_the_published_shape():
    d = datasets.load("synthetic-wiki")
    assert len(d.train) + len(d.validation) == 2173 and len(d.query) == 693
    assert (d.image_dim, d.text_dim, d.num_classes) == (128, 10, 10) and d.single_label
    np.testing.assert_allclose(d.train.image.sum(1), 1.0, atol=1e-5)  # L1-normalised BoVW
    np.testing.assert_allclose(d.train.text.sum(1), 1.0, atol=1e-5)   # topic proportions


def test_same_seed_same_bytes_other_seed_other_bytes():
    a = datasets.load("synthetic-wiki", seed=3).fingerprint()
    assert a == datasets.load("synthetic-wiki", seed=3).fingerprint()
    assert a != datasets.load("synthetic-wiki", seed=4).fingerprint()


def _ridge_probe_map(d, direction):
    """mAP of sign(random rotation of ridge label predictions): a simple learned reference."""
    rot = np.random.default_rng(0).standard_normal((d.num_classes, 32))
    preds = {}
    for m in ("image", "text"):
        x = getattr(d.train, m)
        mu, sd = x.mean(0), x.std(0) + 1e-6
        z = np.c_[(x - mu) / sd, np.ones(len(x))]
        w = np.linalg.solve(z.T @ z + 0.1 * x.shape[1] * np.eye(z.shape[1]), z.T @ d.train.labels)
        preds[m] = {s: np.c_[(getattr(getattr(d, s), m) - mu) / sd, np.ones(len(getattr(d, s)))] @ w - d.train.labels.mean(0)
                    for s in ("query", "retrieval")}
    q_mod, r_mod = direction
    codes = [torch.where(torch.from_numpy(preds[m][s] @ rot) >= 0, 1, -1) for m, s in ((q_mod, "query"), (r_mod, "retrieval"))]
    return float(metrics.mean_average_precision(*codes, torch.from_numpy(d.query.labels), torch.from_numpy(d.retrieval.labels)))


@pytest.mark.parametrize("name,opts", [
    ("synthetic-mirflickr", dict(n_items=5000, n_query=800, n_train=2500, n_validation=300)),
    ("synthetic-wiki", {}),
])
def test_learnable_but_far_from_trivial(name, opts):
    d = datasets.load(name, **opts)
    ql, rl = torch.from_numpy(d.query.labels), torch.from_numpy(d.retrieval.labels)
    random_map = float(((ql @ rl.T) > 0).float().mean())  # expected AP of a random ranking ~ relevant fraction
    for direction in (("image", "text"), ("text", "image")):
        probe = _ridge_probe_map(d, direction)
        assert probe > random_map + 0.08, (name, direction, probe, random_map)
        assert probe < 0.85, (name, direction, probe)


def test_label_popularity_follows_mirflickr(flickr):
    freq = np.concatenate([flickr.query.labels, flickr.retrieval.labels]).mean(0)
    assert np.corrcoef(freq, MIRFLICKR_LABEL_FREQ)[0, 1] > 0.3
    ql, rl = flickr.query.labels, flickr.retrieval.labels
    overlap = ((ql @ rl.T) > 0).mean()
    assert 0.45 < overlap < 0.65  # real MIRFlickr: 0.54 of query-retrieval pairs share a label
