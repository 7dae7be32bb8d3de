"""CUDA paths: every registered method trains on the GPU through the same protocol and agrees
with its CPU fit. Skipped where no CUDA device is present (CI); run on a lent GPU machine."""
import pytest
import torch

import datasets
import methods
from methods import FitContext, StoppingRule
from runners.scoring import evaluate_encoder

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def small():
    return datasets.load("synthetic-wiki", n_items=900, n_train=600, n_query=200, n_validation=100)


# Every registered method; a step cap keeps the CPU side short (what is compared is the device, not
# the schedule's end: float order differences grow with training, and may move a stop).
RULE = StoppingRule(eval_every=100, max_steps=400)


@pytest.mark.parametrize("name", methods.available())
def test_method_trains_on_cuda_like_on_cpu(small, name):
    results = {}
    for device in ("cpu", "cuda"):
        ctx = FitContext(seed=0, device=device, validation=small.validation, stopping=RULE)
        encoder = methods.create(name).fit(small.train, 16, ctx)
        codes = encoder.encode("image", small.query.image)
        assert codes.device.type == "cpu" and codes.dtype == torch.int8 and codes.shape == (200, 16)
        assert set(codes.unique().tolist()) <= {-1, 1}
        results[device] = evaluate_encoder(encoder, small, curves=False).values
    for key in ("map_i2t", "map_t2i"):
        # Same seed and init; only floating-point order differs between the devices.
        assert abs(results["cuda"][key] - results["cpu"][key]) < 0.05, (name, key, results)
