"""The method registry and protocol: names, config overrides, bit lengths, ±1 codes."""
import pytest
import torch

import datasets
import methods
from methods import ConfigError, FitContext, StoppingRule, check_bits, sign_codes


def test_unknown_method_lists_known():
    with pytest.raises(methods.UnknownNameError, match=r"unknown method 'dcmhh'; known: .*dcmh.*Did you mean 'dcmh'"):
        methods.get("dcmhh")


def test_config_override_unknown_field():
    with pytest.raises(ConfigError, match=r"method 'dcmh': unknown config field\(s\) \['epochs'\]; accepted: .*max_epochs"):
        methods.create("dcmh", {"epochs": 3})


def test_config_override_wrong_type():
    with pytest.raises(ConfigError, match=r"field 'max_epochs': expected int, got 'ten'"):
        methods.create("dcmh", {"max_epochs": "ten"})


def test_config_override_applied_and_listed_in_params():
    m = methods.create("dcmh", {"max_epochs": 3, "text_hidden": [64]})
    assert m.config.max_epochs == 3 and m.config.text_hidden == (64,)
    assert m.params()["text_hidden"] == [64]


@pytest.mark.parametrize("bits", [0, -16, 1.5, True, "32"])
def test_bits_must_be_positive_integers(bits):
    with pytest.raises(ValueError, match="bits must be a positive integer"):
        check_bits(bits)


def test_sign_of_zero_is_plus_one():
    codes = sign_codes(torch.tensor([[-0.5, 0.0, 2.0, -0.0]]))
    assert codes.dtype == torch.int8 and codes.tolist() == [[-1, 1, 1, 1]]


# The classic baselines on this 350-item wiki-shaped set: 12 bits exceed the linear CCA rank of
# 10-d topic features (9), so CCA / CCA-ITQ take the RBF anchor map; the anchor maps need at most
# as many anchors as training items; SCM-orth gives at most rank(X^T S Y) = 9 bits here.
PROTOCOL_OVERRIDES = {"cca": {"kernel": "rbf", "n_anchors": 200}, "cca-itq": {"kernel": "rbf", "n_anchors": 200},
                      "seph": {"n_anchors": 200}}
PROTOCOL_BITS = {"scm-orth": 8}


def test_every_method_fits_through_the_protocol():
    data = datasets.load("synthetic-wiki", n_items=600, n_train=400, n_query=150, n_validation=50)
    # The project's own methods: plug-ins that other tests of this process registered (one that
    # always fails, say) are theirs to test.
    own = [name for name in methods.available() if methods.get(name).__module__.startswith("methods.")]
    assert "sam" in own and "seph" in own
    for name in own:
        # Tiny budget: the protocol, not quality, is under test here (widths stay the defaults).
        bits = PROTOCOL_BITS.get(name, 12)
        encoder = methods.create(name, PROTOCOL_OVERRIDES.get(name, {})).fit(
            data.train, bits, FitContext(seed=0, stopping=StoppingRule(max_steps=3)))
        for modality in ("image", "text"):
            codes = encoder.encode(modality, getattr(data.query, modality))
            assert codes.shape == (150, bits) and codes.dtype == torch.int8
            assert set(codes.unique().tolist()) <= {-1, 1}
        record = encoder.fit_record
        assert record is None or (record.steps, record.stop_reason) == (3, "no_validation"), (name, record)


def test_negative_bits_refused_by_fit():
    data = datasets.load("synthetic-wiki", n_items=300, n_train=200, n_query=50, n_validation=20)
    with pytest.raises(ValueError, match=r"bits must be a positive integer .* got -8"):
        methods.create("dcmh").fit(data.train, -8, FitContext())
