"""The validated container and the registries: every bad input gets a message naming what is wrong."""
import numpy as np
import pytest

import datasets
from datasets import CrossModalData, DataError, Split


def _split(n=4, img=3, txt=2, c=2, **kw):
    rng = np.random.default_rng(0)
    labels = np.zeros((n, c))
    labels[np.arange(n), np.arange(n) % c] = 1
    args = dict(image=rng.random((n, img)), text=rng.random((n, txt)), labels=labels)
    args.update(kw)
    return Split(**args, source="toy.mat", name="train")


def test_valid_split_is_converted_to_float32():
    s = _split()
    assert s.image.dtype == np.float32 and s.labels.dtype == np.float32 and len(s) == 4


def test_mismatched_rows_names_file_field_and_counts():
    with pytest.raises(DataError, match=r"toy\.mat \[train\]: field 'text' has 3 rows but 'image' has 4"):
        _split(text=np.zeros((3, 2)))


def test_nan_features_are_refused():
    img = np.ones((4, 3))
    img[2, 1] = np.nan
    with pytest.raises(DataError, match=r"field 'image' has NaN/Inf values in 1 rows"):
        _split(image=img)


def test_label_rows_without_label_are_refused():
    lab = np.array([[1, 0], [0, 0], [0, 1], [1, 1]])
    with pytest.raises(DataError, match=r"1 rows with no label \(first: row 1\)"):
        _split(labels=lab)


def test_non_binary_labels_are_refused():
    with pytest.raises(DataError, match=r"multi-hot with values in \{0, 1\}"):
        _split(labels=np.array([[2, 0], [0, 1], [1, 0], [0, 1]]))


def test_one_dimensional_features_are_refused():
    with pytest.raises(DataError, match=r"field 'image' must be a 2-D array"):
        _split(image=np.ones(4))


def test_split_widths_must_agree():
    with pytest.raises(DataError, match=r"query field 'text' has width 5, train has 2"):
        CrossModalData("toy", _split(), _split(txt=5), _split())


def test_subset_and_fingerprint():
    s = _split()
    data = CrossModalData("toy", s, s.subset([0, 1]), s)
    assert len(data.query) == 2
    assert data.fingerprint() == CrossModalData("toy", s, s.subset([0, 1]), s).fingerprint()
    assert data.fingerprint() != CrossModalData("toy", s, s.subset([0, 2]), s).fingerprint()


def test_unknown_dataset_lists_known_names_and_suggests():
    with pytest.raises(datasets.UnknownNameError) as err:
        datasets.load("synthetic-mirflikr")
    message = str(err.value)
    assert "unknown dataset 'synthetic-mirflikr'" in message
    assert "synthetic-wiki" in message and "Did you mean 'synthetic-mirflickr'" in message


def test_unknown_loader_option_lists_accepted():
    with pytest.raises(DataError, match=r"unknown option\(s\) \['n_itemz'\]; accepted: .*n_items"):
        datasets.load("synthetic-wiki", n_itemz=10)
