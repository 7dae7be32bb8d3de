"""Methods: every registered method learns (mAP far above random), gives ±1 int8 codes of the
requested length, repeats itself under a seed; loss pieces match hand computations."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import datasets
import methods
from methods import FitContext
from methods.dcmh import dcmh_batch_loss
from methods.dscmr import dscmr_terms
from methods.layers import LazyDecaySGD, SparseLinear, pairwise_likelihood
from methods.sam import Margins, SAMConfig, margin_loss
from methods.selection import cosine_map
from methods.ssah import SSAHConfig, SSAHNet, _trunk, adversarial_generator_loss
from methods.layers import Discriminator, LocalResponseNorm2d
from metrics import mean_average_precision

BITS = 16

# Small-and-fast settings (architecture widths, epochs); each key is applied where the method has it.
FAST = {
    "hidden": 256, "common": 128, "epochs": 12, "eval_every": 2, "patience": 3, "lr": 1e-3,
    "text_hidden": (512,), "label_hidden": 256, "semantic_dim": 128, "label_passes": 45,
}
FAST_BY_METHOD = {"ssah": {"text_hidden": 256, "epochs": 10, "lr_image": 1e-3},
                  "dcmh": {"epochs": 40, "text_lr_multiplier": 30.0, "lr_start": 0.1, "lr_end": 0.01}}


def fast_method(name: str, **extra):
    cls = methods.get(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    over = {k: v for k, v in {**FAST, **FAST_BY_METHOD.get(name, {}), **extra}.items() if k in fields}
    return methods.create(name, over)


@pytest.fixture(scope="module")
def multi_label():
    # MIRFlickr-shaped but small: sparse tags (300-d, ~4.6 active), 512-d ReLU image features.
    return datasets.load("synthetic-mirflickr", n_items=2400, n_query=300, n_train=1400, n_validation=200,
                         image_dim=512, text_dim=300)


def random_map(q_labels: np.ndarray, r_labels: np.ndarray) -> float:
    """Expected mAP of a random ranking: per query about the fraction of relevant items."""
    rel = (q_labels @ r_labels.T > 0).mean(1)
    return float(rel.mean())


def evaluate(enc, data):
    q, r = data.query, data.retrieval
    ql, rl = torch.from_numpy(q.labels), torch.from_numpy(r.labels)
    i2t = float(mean_average_precision(enc.encode("image", q.image), enc.encode("text", r.text), ql, rl))
    t2i = float(mean_average_precision(enc.encode("text", q.text), enc.encode("image", r.image), ql, rl))
    return i2t, t2i


# How far above the random-ranking mAP each method must get on the small multi-label set (whose
# linear-probe reference reaches about random + 0.13). DCMH and SSAH learn slowly under their
# papers' optimisers (SGD at 10^-1.5 with 1/(batch n) scaling; Adam at 10^-3.5 from a label net)
# on ~1,400 items and a few hundred steps, so their bar is lower; see FAST_BY_METHOD.
MARGIN = {"dcmh": 0.03, "ssah": 0.04}
# Single-label wiki-shaped set (probe reference: random + ~0.25). SSAH only reaches random + ~0.02
# there (label net on 10 one-hot classes, text net from 10-d topics): a known weakness, reported.
# DCMH likewise reaches only random + ~0.03 there (and on the real Wikipedia features: 0.138 against
# 0.118 in benchmarks/results/methods_cuda.md), so its bar is as low: reported, not hidden.
WIKI_MARGIN = {"ssah": 0.01, "dcmh": 0.01}
# DSCMR's codes are a fixed random projection of its common space and need more epochs than the
# trained hash heads to clear the bar; DCMH runs at the official text learning rate here.
WIKI_EXTRA = {"dscmr": {"epochs": 20}, "dcmh": {"text_lr_multiplier": 1.0}}


# Methods trained by epochs (they report val_map per epoch and draw their initialisation from the
# seed). The closed-form classic baselines (cca, cca-itq, cmfh, scm-*, seph) have no epochs and
# CCA / SCM no randomness at all; tests/test_classic.py checks them against exact references.
TRAINED = [name for name in methods.available() if "epochs" in methods.get(name).Config.__dataclass_fields__]


@pytest.mark.parametrize("name", TRAINED)
def test_method_learns_codes(name, multi_label):
    data = multi_label
    seen = []
    enc = fast_method(name).fit(data.train, BITS, FitContext(seed=3, validation=data.validation,
                                                             on_report=lambda e, v: seen.append((e, dict(v)))))
    for modality in ("image", "text"):
        codes = enc.encode(modality, getattr(data.query, modality)[:50])
        assert codes.dtype == torch.int8 and codes.shape == (50, BITS)
        assert set(torch.unique(codes).tolist()) <= {-1, 1}
    # Per-epoch reports carry validation scores (selection on validation, not query).
    assert seen and any("val_map" in v for _, v in seen)
    base = random_map(data.query.labels, data.retrieval.labels)
    i2t, t2i = evaluate(enc, data)
    assert min(i2t, t2i) > base + MARGIN.get(name, 0.08), (name, i2t, t2i, base)


@pytest.mark.parametrize("name", TRAINED)
def test_same_seed_same_codes(name, multi_label):
    data = multi_label
    fits = [fast_method(name, epochs=2, eval_every=1, label_passes=15).fit(
        data.train, 8, FitContext(seed=5, validation=data.validation)) for _ in range(2)]
    for modality in ("image", "text"):
        x = getattr(data.query, modality)
        a, b = (f.encode(modality, x) for f in fits)
        assert a.shape == (len(x), 8) and torch.equal(a, b)
    other = fast_method(name, epochs=2, eval_every=1, label_passes=15).fit(
        data.train, 8, FitContext(seed=6, validation=data.validation))
    assert not torch.equal(other.encode("image", data.query.image), fits[0].encode("image", data.query.image))


@pytest.mark.parametrize("name", ["dcmh", "sam", "dscmr", "ssah"])
def test_single_label_wiki_shaped(name):
    data = datasets.load("synthetic-wiki", n_items=1500, n_query=300, n_train=1000, n_validation=150)
    enc = fast_method(name, **WIKI_EXTRA.get(name, {})).fit(data.train, BITS, FitContext(seed=0, validation=data.validation))
    base = random_map(data.query.labels, data.retrieval.labels)
    i2t, t2i = evaluate(enc, data)
    assert min(i2t, t2i) > base + WIKI_MARGIN.get(name, 0.08), (name, i2t, t2i, base)


def test_dscmr_embeds_common_space_and_dcmh_does_not(multi_label):
    data = multi_label
    enc = fast_method("dscmr", epochs=1).fit(data.train, BITS, FitContext(seed=0))
    emb = enc.embed("text", data.query.text[:20])
    assert emb.shape == (20, FAST["common"]) and emb.dtype == torch.float32
    enc2 = fast_method("dcmh", epochs=1).fit(data.train, BITS, FitContext(seed=0))
    assert enc2.embed("image", data.query.image[:5]) is None


def test_callback_exception_propagates(multi_label):
    class Prune(Exception):
        pass

    def stop(epoch, values):
        raise Prune

    with pytest.raises(Prune):
        fast_method("sam").fit(multi_label.train, BITS, FitContext(seed=0, validation=multi_label.validation, on_report=stop))


def test_early_stopping_restores_best_and_stops(multi_label):
    reports = []
    fast_method("dscmr-hash", epochs=40, eval_every=1, patience=2, lr=1e-2).fit(
        multi_label.train, BITS, FitContext(seed=0, validation=multi_label.validation,
                                             on_report=lambda e, v: reports.append(v["val_map"])))
    assert len(reports) < 40  # stopped early: a huge lr stops improving quickly
    best = int(np.argmax(reports))
    assert len(reports) == best + 1 + 2  # exactly `patience` evaluations after the best


# ----------------------------------------------------------------------------------------------
# Loss pieces against hand computation


def _softplus(x):
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


def test_pairwise_likelihood_hand_and_stable():
    theta = torch.tensor([[0.5, -2.0], [800.0, -800.0]])
    s = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    want = (_softplus(0.5) - 0.5) + _softplus(-2.0) + (_softplus(800.0) - 800.0) + _softplus(-800.0)
    got = pairwise_likelihood(theta, s)
    assert torch.isfinite(got) and abs(float(got) - want) < 1e-4


def test_dcmh_batch_loss_value_and_gradient_match_paper():
    torch.manual_seed(0)
    n, k, b = 5, 3, 2
    fixed = torch.randn(n, k)
    own = torch.randn(n, k)
    idx = torch.tensor([1, 3])
    out = torch.randn(b, k, requires_grad=True)
    own[idx] = out.detach()
    codes = torch.sign(torch.randn(n, k))
    labels = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 1], [1, 0]], dtype=torch.float32)
    gamma, eta = 0.7, 1.3
    loss = dcmh_batch_loss(out, own, idx, fixed, codes, labels, gamma, eta)
    # By hand (numpy loops): the paper's J restricted to the batch rows.
    o, fx, bb, lab, ow = out.detach().numpy(), fixed.numpy(), codes.numpy(), labels.numpy(), own.numpy()
    like = 0.0
    for a, i in enumerate(idx.tolist()):
        for j in range(n):
            th = 0.5 * float(o[a] @ fx[j])
            sij = float(lab[i] @ lab[j] > 0)
            like += _softplus(th) - sij * th
    quant = sum(float(((bb[i] - o[a]) ** 2).sum()) for a, i in enumerate(idx.tolist()))
    bal = float((ow.sum(0) ** 2).sum())
    want = (like + gamma * quant + eta * bal) / (b * n)
    assert abs(loss.item() - want) < 1e-5
    loss.backward()
    # The MATLAB gradient (process_DCMH.m), per batch row a: 0.5 sum_j (sigmoid(theta_aj) - S_aj) F_j
    # + 2 gamma (out_a - B_a) + 2 eta own^T 1, all over (b n).
    grad = np.zeros_like(o)
    for a, i in enumerate(idx.tolist()):
        for j in range(n):
            th = 0.5 * float(o[a] @ fx[j])
            grad[a] += 0.5 * (1 / (1 + math.exp(-th)) - float(lab[i] @ lab[j] > 0)) * fx[j]
        grad[a] += 2 * gamma * (o[a] - bb[i]) + 2 * eta * ow.sum(0)
    np.testing.assert_allclose(out.grad.numpy(), grad / (b * n), rtol=1e-4, atol=1e-6)


def test_sparse_linear_and_lazy_decay_sgd_match_dense_sgd():
    torch.manual_seed(0)
    x = (torch.rand(16, 40) < 0.1).float()
    y = torch.randn(16, 4)
    sparse = SparseLinear(40, 4, sparse_grad=True)
    dense = torch.nn.Linear(40, 4)
    with torch.no_grad():
        dense.weight.copy_(sparse.weight.t())
        dense.bias.copy_(sparse.bias)
    assert torch.allclose(sparse(x), dense(x), atol=1e-6)
    opt_s = LazyDecaySGD(sparse.parameters(), lr=0.1, weight_decay=0.05, sparse_modules=[sparse])
    opt_d = torch.optim.SGD(dense.parameters(), lr=0.1, weight_decay=0.05)
    for step in range(5):
        rows = slice(4 * (step % 4), 4 * (step % 4) + 4)
        for model, opt in ((sparse, opt_s), (dense, opt_d)):
            opt.zero_grad()
            ((model(x[rows]) - y[rows]) ** 2).sum().backward()
            opt.step()
    effective = (sparse.weight * sparse.scale).t()
    assert float(sparse.scale) < 1.0  # the decay went into the scalar
    assert torch.allclose(effective, dense.weight, atol=1e-5)
    assert torch.allclose(sparse.bias, dense.bias, atol=1e-6)


def test_dscmr_terms_hand():
    u = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    v = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pu = torch.tensor([[0.5, 0.0], [0.0, 1.0]])
    pv = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    t = dscmr_terms(pu, pv, u, v, y)
    label = (0.5 + 0.0) / 2 + (1.0 + 1.0) / 2
    assert abs(float(t["label"]) - label) < 1e-6
    s = np.eye(2)
    cos = lambda a, b: a @ b / (np.linalg.norm(a) * np.linalg.norm(b))  # noqa: E731
    un, vn = u.numpy(), v.numpy()
    pair = 0.0
    for a, b in ((un, un), (un, vn), (vn, vn)):
        pair += np.mean([[_softplus(0.5 * cos(a[i], b[j])) - s[i, j] * 0.5 * cos(a[i], b[j]) for j in range(2)] for i in range(2)])
    assert abs(float(t["pairwise"]) - pair) < 1e-5
    inv = (np.linalg.norm(un[0] - vn[0]) + np.linalg.norm(un[1] - vn[1])) / 2
    assert abs(float(t["invariance"]) - inv) < 1e-6


def test_sam_margin_loss_single_and_multi_label_hand():
    cos = torch.tensor([[0.8, 0.1, -0.2]])
    m = torch.tensor([0.3, 0.2, 0.1])
    s = 10.0
    y1 = torch.tensor([[1.0, 0.0, 0.0]])
    logits = [s * (0.8 - 0.3), s * 0.1, s * -0.2]
    want = -(logits[0] - math.log(sum(math.exp(v) for v in logits)))
    assert abs(float(margin_loss(cos, y1, m, s, multi_label=False)) - want) < 1e-5
    y2 = torch.tensor([[1.0, 0.0, 1.0]])
    z = [s * (0.8 - 0.3), s * (0.1 + 0.2), s * (-0.2 - 0.1)]
    bce = [_softplus(-z[0]), _softplus(z[1]), _softplus(-z[2])]  # -log sigmoid(z) / -log(1 - sigmoid(z))
    assert abs(float(margin_loss(cos, y2, m, s, multi_label=True)) - sum(bce) / 3) < 1e-5


def test_sam_adaptive_margin_formula():
    cfg = SAMConfig()
    counts = torch.tensor([100.0, 25.0, 400.0])
    mg = Margins(cfg, counts)
    mg.warm = False
    cos = torch.tensor([[0.9, 0.0, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 0.6]])
    mg.observe("image", cos, torch.eye(3))
    kappa = np.array([0.9, 0.3, 0.6])
    freq = counts.numpy() ** -0.25
    want = np.clip(cfg.m0 + cfg.margin_beta * (kappa.mean() - kappa) + cfg.margin_rho * freq / freq.max(), cfg.m_min, cfg.m_max)
    np.testing.assert_allclose(mg.value("image").numpy(), want, atol=1e-6)
    # The text row has seen nothing yet: base margin; per-modality rows are independent.
    np.testing.assert_allclose(mg.value("text").numpy(), np.full(3, cfg.m0), atol=1e-7)
    mg.warm = True
    np.testing.assert_allclose(mg.value("image").numpy(), np.full(3, cfg.m0), atol=1e-7)


@pytest.mark.parametrize("bug", [False, True])
def test_ssah_adversarial_term_updates_modality_net_unless_tf_bug(bug):
    torch.manual_seed(0)
    cfg = SSAHConfig(semantic_dim=16)
    net = SSAHNet(_trunk(20, None, 16, False), 16, 8, 3, False)
    disc = Discriminator(16)
    _, feat, _ = net(torch.rand(6, 20))
    adversarial_generator_loss(disc, feat, reproduce_tf_bug=bug).backward()
    grads = [p.grad for p in net.trunk.parameters()]
    if bug:
        assert all(g is None or float(g.abs().sum()) == 0.0 for g in grads)
    else:
        assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in disc.parameters())
    assert cfg.reproduce_tf_bug is False  # the default is the fixed version


def test_local_response_norm_matches_tf_formula_and_torch():
    # TF: out[i, c] = x[i, c] / (bias + alpha * sum_{|d - c| <= r} x[i, d]^2)^beta, written as a loop.
    x = torch.randn(3, 11, dtype=torch.float64) * 30
    r, bias, alpha, beta = 2, 2.0, 1e-4, 0.75
    expected = torch.empty_like(x)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            window = sum(float(x[i, d]) ** 2 for d in range(max(0, c - r), min(x.shape[1], c + r + 1)))
            expected[i, c] = x[i, c] / (bias + alpha * window) ** beta
    ours = LocalResponseNorm2d(r, bias, alpha, beta)(x)
    torch.testing.assert_close(ours, expected)
    torch_lrn = torch.nn.LocalResponseNorm(2 * r + 1, alpha=alpha * (2 * r + 1), beta=beta, k=bias)
    torch.testing.assert_close(ours, torch_lrn(x.unsqueeze(-1)).squeeze(-1))


def test_cosine_map_perfect_and_reversed():
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    assert abs(cosine_map(emb, emb, labels, labels) - 1.0) < 1e-9
    assert cosine_map(emb, -emb, labels, labels) < 1.0
