"""Methods: the shared stopping rule (scripted and on real fits), best-state restore, every
registered method learns (mAP far above random), gives ±1 int8 codes of the requested length,
repeats itself under a seed; SSAH's collapse guard; loss pieces match hand computations."""
from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

import datasets
import methods
import methods.training as training
from datasets.preprocessing import preprocess
from methods import ConfigError, FitContext, StoppingRule, stopping_rule
from methods.base import TorchEncoder
from methods.dcmh import dcmh_batch_loss
from methods.dscmr import dscmr_terms
from methods.layers import Discriminator, LocalResponseNorm2d, SparseLinear
from methods.losses import pairwise_likelihood
from methods.optim import LazyDecaySGD
from methods.sam import Margins, SAMConfig, SAMNet, anchor_margins, margin_loss, sample_margin_loss
from methods.layers import CommonSpaceNet
from methods.selection import cosine_map
from methods.ssah import GuideCollapseError, SSAHConfig, SSAHNet, _trunk, adversarial_generator_loss, check_guide
from methods.training import Patience, TrainingLoop
from metrics import mean_average_precision

BITS = 16

# Small widths so every fit takes seconds; schedules stay the methods' own except where a few
# hundred steps need a faster rate (the defaults are measured on the real sets, not here).
SMALL = {"hidden": 256, "common": 128, "text_hidden": (512,), "lr": 1e-3}
SMALL_BY_METHOD = {
    # SSAH: 10 + 5 / 1 + 1 / 3 + 2 / 3 + 2 passes per epoch instead of 10 + 5 / 1 + 1 / 15 + 7 + 5 x 2,
    # so an epoch (one evaluation) is ~300 steps on 1,200 items, not ~780. The label net keeps its
    # default widths: its lr_label / init fix was measured at those.
    "ssah": {"text_hidden": 256, "image_passes": (3, 2), "text_passes": (3, 2), "lr_image": 10 ** -3.5, "lr_text": 1e-3},
    "dcmh": {"text_lr_multiplier": 30.0, "lr_start": 0.1, "lr_end": 0.01, "max_epochs": 40},
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These fits are tiny: on 2 shared cores a second torch thread only adds contention (a step
    # took 5x longer with 2 threads than with 1 under load).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def small_method(name: str, **extra):
    cls = methods.get(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    over = {k: v for k, v in {**SMALL, **SMALL_BY_METHOD.get(name, {}), **extra}.items() if k in fields}
    return methods.create(name, over)


@pytest.fixture(scope="module")
def multi_label():
    # MIRFlickr-shaped but small: sparse tags (300-d, ~4.6 active), 512-d ReLU image features,
    # preprocessed as the runner does (z-scored image features, tags as they are).
    return preprocess(datasets.load("synthetic-mirflickr", n_items=2400, n_query=300, n_train=1400, n_validation=200,
                                    image_dim=512, text_dim=300), "auto")


@pytest.fixture(scope="module")
def single_label():
    return preprocess(datasets.load("synthetic-wiki", n_items=1500, n_query=300, n_train=1000, n_validation=150), "auto")


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


def assert_rule_followed(record, reports, rule: StoppingRule, max_steps: int):
    """The recorded evaluations obey the rule: evaluations every eval_every steps (and at the
    last step), best = the first maximum, and a patience stop only once the last `patience`
    scores stayed within min_delta of the best before them (never while still improving)."""
    evals = [(step, v["val_map"]) for step, v in reports if "val_map" in v]
    steps = [s for s, _ in evals]
    scores = [v for _, v in evals]
    assert record.evaluations == len(evals) > 0
    assert steps == [s for s in range(rule.eval_every, record.steps + 1, rule.eval_every)] + \
        ([record.steps] if record.steps % rule.eval_every else [])
    best = int(np.argmax(scores))
    assert record.best_step == steps[best] and record.best_score == pytest.approx(scores[best], abs=1e-12)
    if record.stop_reason == "patience":
        p = rule.patience
        assert len(scores) > p and max(scores[-p:]) <= max(scores[:-p]) + rule.min_delta
        assert record.steps <= max_steps  # patience may run out at the cap itself
    else:
        assert record.stop_reason == "step_cap" and record.steps == max_steps


# ----------------------------------------------------------------------------------------------
# The rule, scripted


def run_patience(scores, patience, min_delta):
    rule = Patience(patience, min_delta)
    for k, s in enumerate(scores):
        _, stop = rule.update(s)
        if stop:
            return k
    return None


def test_patience_stops_exactly_after_patience_evaluations_without_gain():
    # Best at evaluation 2; then 3 evaluations without a gain above 0.01: stop at index 5.
    assert run_patience([0.1, 0.2, 0.30, 0.305, 0.29, 0.309], patience=3, min_delta=0.01) == 5
    # 0.311 beats the reference 0.30 by more than 0.01: the count restarts there.
    assert run_patience([0.1, 0.2, 0.30, 0.305, 0.29, 0.311, 0.3, 0.3, 0.3], patience=3, min_delta=0.01) == 8
    assert run_patience([0.5] * 10, patience=4, min_delta=1e-3) == 4  # first score counts as the improvement
    assert run_patience([0.1 + 0.02 * k for k in range(100)], patience=2, min_delta=0.01) is None


def test_patience_never_stops_while_creeping_up_by_more_than_the_tolerance_overall():
    # +0.6 delta per evaluation: no single step beats delta, but every two steps do.
    assert run_patience([0.6e-3 * k for k in range(200)], patience=2, min_delta=1e-3) is None
    # +0.4 delta per evaluation: over 3 evaluations 1.2 delta > delta, so patience 3 never stops
    # either, while patience 2 (0.8 delta in its window) must.
    assert run_patience([0.4e-3 * k for k in range(200)], patience=3, min_delta=1e-3) is None
    assert run_patience([0.4e-3 * k for k in range(200)], patience=2, min_delta=1e-3) is not None


def test_patience_random_sequences_never_stop_while_improving():
    rng = random.Random(0)
    for trial in range(300):
        p, delta = rng.randint(1, 6), rng.choice([1e-3, 1e-2, 0.05])
        scores = [rng.random() * 0.1 + 0.003 * k * rng.random() for k in range(60)]
        k = run_patience(scores, p, delta)
        if k is None:
            continue
        window, before = scores[k - p + 1: k + 1], scores[: k - p + 1]
        assert len(window) == p and before, (trial, k)
        assert max(window) <= max(before) + delta, (trial, scores[: k + 1])


class Scripted:
    """A stand-in for selection.validation_scores returning a scripted val_map sequence and
    recording, per evaluation, the codes the encoder gives the validation split."""

    def __init__(self, scores, record_codes=True):
        self.scores, self.codes, self.calls, self.record_codes = list(scores), [], 0, record_codes

    def __call__(self, encoder, split, use_embedding=False):
        if self.record_codes:
            self.codes.append({m: encoder.encode(m, getattr(split, m)).clone() for m in ("image", "text")})
        v = self.scores[self.calls]
        self.calls += 1
        return {"val_map_i2t": v, "val_map_t2i": v, "val_map": v}


def counting_loop(ctx, steps_per_epoch=10, schedule_epochs=100):
    """A TrainingLoop over a 1-parameter module whose weight is set to the step count."""
    net = nn.Linear(1, 1, bias=False)
    loop = TrainingLoop(ctx, {"net": net}, lambda: TorchEncoder(1, {"image": net, "text": net}, torch.device("cpu")),
                        steps_per_epoch=steps_per_epoch, schedule_epochs=schedule_epochs)
    for _ in loop.epochs():
        for _ in range(steps_per_epoch):
            with torch.no_grad():
                net.weight.fill_(loop.steps + 1.0)
            if loop.step({"loss": torch.tensor(float(loop.steps))}):
                break
    return net, loop.finish()


def test_loop_stops_on_patience_and_restores_the_best_state(monkeypatch, single_label):
    scripted = Scripted([0.1, 0.3, 0.2, 0.305, 0.25, 0.1, 0.4], record_codes=False)
    monkeypatch.setattr(training.selection, "validation_scores", scripted)
    reports = []
    ctx = FitContext(validation=single_label.validation, stopping=StoppingRule(eval_every=4, patience=3, min_delta=0.01),
                     on_report=lambda step, v: reports.append((step, v)))
    net, record = counting_loop(ctx)
    # Evaluations at 4, 8, ..., 24; best 0.305 at step 16 (within min_delta of 0.3: no reset), stop at 20.
    assert [s for s, _ in reports] == [4, 8, 12, 16, 20]
    assert (record.steps, record.best_step, record.evaluations, record.stop_reason) == (20, 16, 5, "patience")
    assert record.best_score == pytest.approx(0.305) and record.seconds >= 0
    assert float(net.weight) == 16.0  # the state of step 16, not of step 20
    assert reports[1][1]["loss"] == pytest.approx(np.mean([4, 5, 6, 7]))  # losses averaged since the last report
    assert set(reports[0][1]) == {"loss", "val_map", "val_map_i2t", "val_map_t2i"}


def test_loop_cap_epoch_default_and_no_validation(monkeypatch, single_label):
    monkeypatch.setattr(training.selection, "validation_scores", Scripted([0.1 * k for k in range(100)], record_codes=False))
    reports = []
    ctx = FitContext(validation=single_label.validation, stopping=StoppingRule(max_steps=25),
                     on_report=lambda step, v: reports.append(step))
    net, record = counting_loop(ctx, steps_per_epoch=10)
    # eval_every None = one epoch (10 steps); the cap evaluates too; still improving: best = last.
    assert reports == [10, 20, 25] and (record.steps, record.best_step, record.stop_reason) == (25, 25, "step_cap")
    # max_steps None = the paper schedule: 7 epochs x 10 steps.
    net, record = counting_loop(FitContext(validation=single_label.validation), steps_per_epoch=10, schedule_epochs=7)
    assert record.steps == 70 and record.stop_reason == "step_cap"
    net, record = counting_loop(FitContext(stopping=StoppingRule(max_steps=30)))
    assert (record.steps, record.best_step, record.evaluations, record.stop_reason) == (30, 30, 0, "no_validation")
    assert math.isnan(record.best_score) and float(net.weight) == 30.0


def test_stopping_rule_from_a_suite_table():
    assert stopping_rule({}) == StoppingRule()
    rule = stopping_rule({"eval_every": 50, "patience": 5, "min_delta": 0, "max_steps": 1000} | {"min_delta": 0.01})
    assert rule == StoppingRule(eval_every=50, patience=5, min_delta=0.01, max_steps=1000)
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['patients'\]; accepted: eval_every, patience"):
        stopping_rule({"patients": 3})
    with pytest.raises(ConfigError, match=r"field 'patience': must be > 0, got 0"):
        stopping_rule({"patience": 0})
    with pytest.raises(ConfigError, match=r"field 'min_delta': must be > 0"):
        stopping_rule({"min_delta": -0.1})
    with pytest.raises(ConfigError, match=r"field 'max_steps': expected an integer > 0, got 1.5"):
        stopping_rule({"max_steps": 1.5})
    with pytest.raises(ConfigError, match=r"field 'eval_every': expected an integer"):
        stopping_rule({"eval_every": True})


def test_configs_refuse_training_lengths_that_train_nothing():
    # Checked where every entry point passes (suite, tune CLI, Python API): methods.create.
    with pytest.raises(ConfigError, match=r"method 'dscmr' field 'max_epochs' is 0; it counts how long the fit trains"):
        methods.create("dscmr", {"max_epochs": 0})
    with pytest.raises(ConfigError, match=r"method 'ssah' field 'text_passes' is \(15, 0\)"):
        methods.create("ssah", {"text_passes": [15, 0]})
    with pytest.raises(ConfigError, match=r"method 'ssah' field 'decay_reference_items' is -1; expected 0"):
        methods.create("ssah", {"decay_reference_items": -1})
    assert methods.create("ssah", {"decay_reference_items": 0, "text_passes": [1]}).config.text_passes == (1,)


# ----------------------------------------------------------------------------------------------
# Every method under the rule

# Methods trained by optimizer steps under the rule. The closed-form classic baselines (cca,
# cca-itq, cmfh, scm-*, seph) have no steps; tests/test_classic.py checks them against exact references.
TRAINED = [name for name in methods.available() if methods.get(name).trained_by_steps]


@pytest.mark.parametrize("name", TRAINED)
def test_method_restores_the_state_of_its_best_evaluation(name, monkeypatch, multi_label):
    # A scripted validation curve peaking at one evaluation, then 3 without gain: the returned
    # encoder must give exactly the codes of the peak, not those of the last evaluation.
    # SSAH trains its label net for the first 165 steps (15 passes of 11 batches); its peak is
    # put at step 225, after its image net has trained.
    every, scores = (45, [0.1, 0.15, 0.2, 0.25, 0.5, 0.3, 0.3, 0.3]) if name == "ssah" else (15, [0.2, 0.5, 0.4, 0.3, 0.45])
    scripted = Scripted(scores)
    monkeypatch.setattr(training.selection, "validation_scores", scripted)
    rule = StoppingRule(eval_every=every, patience=3, min_delta=1e-3, max_steps=100_000)
    enc = small_method(name).fit(multi_label.train, BITS, FitContext(seed=1, validation=multi_label.validation, stopping=rule))
    record = enc.fit_record
    peak = int(np.argmax(scores))
    assert (record.steps, record.best_step, record.evaluations, record.stop_reason) == \
        (every * len(scores), every * (peak + 1), len(scores), "patience")
    for m in ("image", "text"):
        final = enc.encode(m, getattr(multi_label.validation, m))
        assert torch.equal(final, scripted.codes[peak][m]), (name, m)
    assert any(not torch.equal(scripted.codes[-1][m], scripted.codes[peak][m]) for m in ("image", "text")), name


@pytest.mark.parametrize("name", TRAINED)
def test_method_learns_and_stops_by_the_rule(name, multi_label):
    data = multi_label
    reports = []
    # DCMH's SGD under 1/(batch n) gradient scaling creeps: a longer patience (its evaluations
    # here are 40 steps, under 2 epochs).
    rule = StoppingRule(eval_every=None if name == "ssah" else 40, patience=6 if name == "dcmh" else 3, min_delta=1e-3,
                        max_steps=1200)
    enc = small_method(name).fit(data.train, BITS, FitContext(seed=3, validation=data.validation, stopping=rule,
                                                              on_report=lambda step, v: reports.append((step, dict(v)))))
    for modality in ("image", "text"):
        codes = enc.encode(modality, getattr(data.query, modality)[:50])
        assert codes.dtype == torch.int8 and codes.shape == (50, BITS)
        assert set(torch.unique(codes).tolist()) <= {-1, 1}
    record = enc.fit_record
    # one epoch of the method's schedule when the rule leaves eval_every unset: the step of the first evaluation
    every = rule.eval_every or next(step for step, v in reports if "val_map" in v)
    assert_rule_followed(record, reports, dataclasses.replace(rule, eval_every=every), rule.max_steps)
    assert record.seconds > 0 and all(k.startswith(("loss", "val_map", "margin")) for _, v in reports for k in v)
    base = random_map(data.query.labels, data.retrieval.labels)
    i2t, t2i = evaluate(enc, data)
    assert min(i2t, t2i) > base + 0.08, (name, i2t, t2i, base, record)


# Single-label, wiki-shaped (10 classes, 128-d histograms, 10-d topics): the base methods only.
@pytest.mark.parametrize("name", ["dcmh", "dscmr", "dscmr-hash", "sam", "ssah"])
def test_single_label_wiki_shaped(name, single_label):
    data = single_label
    rule = StoppingRule(eval_every=None if name == "ssah" else 40, patience=3, max_steps=1500)
    enc = small_method(name).fit(data.train, BITS, FitContext(seed=0, validation=data.validation, stopping=rule))
    base = random_map(data.query.labels, data.retrieval.labels)
    i2t, t2i = evaluate(enc, data)
    assert min(i2t, t2i) > base + 0.08, (name, i2t, t2i, base, enc.fit_record)


@pytest.mark.parametrize("name", TRAINED)
def test_same_seed_same_codes(name, multi_label):
    data = multi_label
    # SSAH: past its 15 label-net passes (165 steps here), into the modality nets.
    rule = StoppingRule(eval_every=10, max_steps=200 if name == "ssah" else 30)
    over = {"image_passes": (1,), "text_passes": (1,), "dis_passes": (1,)}
    fits = [small_method(name, **over).fit(data.train, 8, FitContext(seed=5, validation=data.validation, stopping=rule))
            for _ in range(2)]
    for modality in ("image", "text"):
        x = getattr(data.query, modality)
        a, b = (f.encode(modality, x) for f in fits)
        assert a.shape == (len(x), 8) and a.dtype == torch.int8 and torch.equal(a, b)
    other = small_method(name, **over).fit(data.train, 8, FitContext(seed=6, validation=data.validation, stopping=rule))
    assert not torch.equal(other.encode("image", data.query.image), fits[0].encode("image", data.query.image))


def test_ssah_collapse_guard_names_the_network_codes_and_classes(single_label):
    # SSAH.py's label-net rate 10^-2 and init on single-label data: every class ends on one code.
    with pytest.raises(GuideCollapseError, match=r"label network gives \d distinct code\(s\) for 10 classes") as caught:
        small_method("ssah", lr_label=1e-2, official_init_label_net=True).fit(
            single_label.train, BITS, FitContext(seed=0, validation=single_label.validation))
    assert int(str(caught.value).split(" gives ")[1].split()[0]) <= 3
    labels = torch.eye(4)[[0, 1, 2, 3, 0]]
    codes = torch.tensor([[1.0, -1], [1, 1], [-1, 1], [-1, -1], [1, -1]])
    check_guide("label network", codes, labels, 0)  # 4 codes for 4 classes: fine
    with pytest.raises(GuideCollapseError, match=r"gives 3 distinct code\(s\) for 4 classes"):
        check_guide("label network", codes[[0, 1, 2, 2, 0]], labels, 0)
    check_guide("label network", codes[[0, 2, 0, 2, 0]][:, :1], labels, 0)  # 1 bit: at most 2 codes


def test_dscmr_embeds_common_space_and_dcmh_does_not(multi_label):
    data = multi_label
    rule = StoppingRule(max_steps=5)
    enc = small_method("dscmr").fit(data.train, BITS, FitContext(seed=0, stopping=rule))
    emb = enc.embed("text", data.query.text[:20])
    assert emb.shape == (20, SMALL["common"]) and emb.dtype == torch.float32
    enc2 = small_method("dcmh").fit(data.train, BITS, FitContext(seed=0, stopping=rule))
    assert enc2.embed("image", data.query.image[:5]) is None and enc2.fit_record.stop_reason == "no_validation"


def test_dcmh_official_init_is_normal_001():
    torch.manual_seed(0)
    net = methods.create("dcmh", {"text_hidden": [64]})
    data = datasets.load("synthetic-wiki", n_items=300, n_train=200, n_query=50, n_validation=20)
    enc = net.fit(data.train, 16, FitContext(stopping=StoppingRule(max_steps=1)))
    weights = [p for t in enc.nets.values() for n_, p in t.named_parameters() if n_.endswith("weight")]
    # After one SGD step at 10^-1.5 scaled by 1/(128 n) the weights are still their init.
    assert all(abs(float(w.std()) - 0.01) < 0.002 for w in weights), [float(w.std()) for w in weights]


def test_callback_exception_propagates(multi_label):
    class Prune(Exception):
        pass

    def stop(step, values):
        raise Prune

    with pytest.raises(Prune):
        small_method("sam").fit(multi_label.train, BITS, FitContext(seed=0, validation=multi_label.validation, on_report=stop))


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


def test_sam_compactness_margin_formula():
    # sam-prototype's statistic: the difficulty of a class is minus its compactness kappa.
    cfg = SAMConfig(margin_statistic="compactness")
    counts = torch.tensor([100.0, 25.0, 400.0])
    mg = Margins(cfg, counts)
    mg.warm = False
    cos = torch.tensor([[0.9, 0.0, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 0.6]])
    mg.observe("image", -cos, torch.eye(3))
    kappa = np.array([0.9, 0.3, 0.6])
    freq = counts.numpy() ** -0.25
    want = np.clip(cfg.m0 + cfg.margin_beta * (kappa.mean() - kappa) + cfg.margin_rho * freq / freq.max(), cfg.m_min, cfg.m_max)
    np.testing.assert_allclose(mg.value("image").numpy(), want, atol=1e-6)
    # The text row has seen nothing yet: base margin; per-modality rows are independent.
    np.testing.assert_allclose(mg.value("text").numpy(), np.full(3, cfg.m0), atol=1e-7)
    mg.warm = True
    np.testing.assert_allclose(mg.value("image").numpy(), np.full(3, cfg.m0), atol=1e-7)


def test_sam_margins_adapt_to_predicted_label_confusion():
    # Hand-made: 3 classes, 2 items each in the image batch. The predicted labels put 0.9, 0.4 and
    # 0.7 on the true class, so the difficulty (mass off the class) is 0.1, 0.6, 0.3: class 1 gets
    # m0 + beta (0.6 - 0.333) and class 0 less; a second batch moves the EMA as computed by hand.
    cfg = SAMConfig()
    counts = torch.tensor([2.0, 2.0, 2.0])  # equal counts: the frequency term is rho for every class
    mg = Margins(cfg, counts)
    mg.warm = False
    labels = torch.eye(3).repeat_interleave(2, 0)
    true_prob = torch.tensor([0.9, 0.9, 0.4, 0.4, 0.7, 0.7])
    predicted = labels * true_prob[:, None] + (1 - labels) * ((1 - true_prob[:, None]) / 2)
    mg.observe("image", 1 - predicted, labels)
    d = np.array([0.1, 0.6, 0.3])
    want = np.clip(cfg.m0 + cfg.margin_beta * (d - d.mean()) + cfg.margin_rho, cfg.m_min, cfg.m_max)
    np.testing.assert_allclose(mg.value("image").numpy(), want, atol=1e-6)
    assert mg.value("image")[1] > mg.value("image")[2] > mg.value("image")[0]
    # class 0 becomes hard in a later batch (0.5 on its class): EMA 0.9 * 0.1 + 0.1 * 0.5
    true_prob = torch.tensor([0.5, 0.5, 0.4, 0.4, 0.7, 0.7])
    predicted = labels * true_prob[:, None] + (1 - labels) * ((1 - true_prob[:, None]) / 2)
    mg.observe("image", 1 - predicted, labels)
    d = np.array([0.9 * 0.1 + 0.1 * 0.5, 0.6, 0.3])
    want = np.clip(cfg.m0 + cfg.margin_beta * (d - d.mean()) + cfg.margin_rho, cfg.m_min, cfg.m_max)
    np.testing.assert_allclose(mg.value("image").numpy(), want, atol=1e-6)
    np.testing.assert_allclose(mg.value("text").numpy(), np.full(3, cfg.m0), atol=1e-7)  # text saw nothing
    # multi-label anchors take the mean margin of their labels; an unlabelled one the mean margin
    m = torch.tensor([0.1, 0.3, 0.5])
    got = anchor_margins(m, torch.tensor([[1.0, 0, 0], [1.0, 0, 1], [0.0, 0, 0]]))
    np.testing.assert_allclose(got.numpy(), [0.1, 0.3, 0.3], atol=1e-7)


def test_sam_attention_follows_the_predicted_labels():
    torch.manual_seed(0)
    backbone = CommonSpaceNet(6, 5, 3, hidden=8, common=4)
    net = SAMNet(backbone, 3, 4, 8, attention=True, tau=0.1, multi_label=False, attention_from="predicted")
    x = torch.randn(5, 6)
    with torch.no_grad():
        parts = net.parts("image", x)
        torch.testing.assert_close(parts["attention"], torch.softmax(backbone.predictor(parts["z"]), dim=1))
        # Make the predictor say "class 2" for every input: the attention moves onto class 2 and the
        # refined feature turns towards class 2's vector.
        backbone.predictor.weight.zero_()
        backbone.predictor.bias.copy_(torch.tensor([0.0, 0.0, 20.0]))
        moved = net.parts("image", x)
        assert torch.all(moved["attention"].argmax(1) == 2) and float(moved["attention"][:, 2].min()) > 0.99
        e2 = torch.nn.functional.normalize(net.proxies, dim=1)[2]
        assert torch.all(moved["z_tilde"] @ e2 > moved["z"] @ e2)
        # The prototype-driven variant ignores the predictor: softmax(cos(z, proxies) / tau).
        proto = SAMNet(backbone, 3, 4, 8, attention=True, tau=0.1, multi_label=False, attention_from="prototypes")
        proto.proxies = net.proxies
        cos = proto.cosines(moved["z"]) / 0.1
        torch.testing.assert_close(proto.parts("image", x)["attention"], torch.softmax(cos, dim=1))


def test_sam_sample_margin_loss_against_a_loop():
    torch.manual_seed(1)
    a = torch.nn.functional.normalize(torch.randn(3, 4), dim=1)
    c = torch.nn.functional.normalize(torch.randn(5, 4), dim=1)
    similar = torch.tensor([[1.0, 0, 1, 0, 0], [0, 1, 0, 0, 1], [0, 0, 0, 0, 0]])  # anchor 2: no positive
    self_mask = torch.zeros(3, 5, dtype=torch.bool)
    self_mask[0, 0] = True  # anchor 0 is candidate 0: its positive is only candidate 2
    margins, s = torch.tensor([0.2, 0.35, 0.1]), 8.0
    total = 0.0
    for i in range(3):
        cos = [float(a[i] @ c[j]) for j in range(5)]
        pos = [j for j in range(5) if similar[i, j] > 0 and not self_mask[i, j]]
        neg = [j for j in range(5) if similar[i, j] == 0 and not self_mask[i, j]]
        negsum = sum(math.exp(s * (cos[j] + float(margins[i]))) for j in neg)
        terms = [-math.log(math.exp(s * cos[p]) / (math.exp(s * cos[p]) + negsum)) for p in pos]
        total += sum(terms) / len(terms) if terms else 0.0
    got = float(sample_margin_loss(a, c, similar, self_mask, margins, s))
    assert abs(got - total / 3) < 1e-5
    # a larger margin on an anchor can only raise its loss
    bigger = float(sample_margin_loss(a, c, similar, self_mask, margins + torch.tensor([0.2, 0, 0]), s))
    assert bigger > got


SAM_FAMILY = [name for name in methods.available() if name == "sam" or name.startswith("sam-")]


@pytest.mark.parametrize("name", SAM_FAMILY)
def test_every_sam_variant_trains_and_encodes(name, multi_label, single_label):
    rule = StoppingRule(eval_every=20, patience=2, max_steps=60)
    for data in (single_label, multi_label):
        enc = small_method(name).fit(data.train, 12, FitContext(seed=0, validation=data.validation, stopping=rule))
        for modality in ("image", "text"):
            codes = enc.encode(modality, getattr(data.query, modality)[:40])
            assert codes.shape == (40, 12) and codes.dtype == torch.int8 and set(torch.unique(codes).tolist()) <= {-1, 1}
            emb = enc.embed(modality, getattr(data.query, modality)[:40])
            assert emb.shape[0] == 40 and torch.allclose(emb.float().norm(dim=1), torch.ones(40), atol=1e-2)
        assert enc.fit_record.steps > 0


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
