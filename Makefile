# Two entry points on a fresh machine with only python3: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch, installed only when the environment has no torch at all;
# any torch >= 2.4 already present is kept.
TORCH_SPEC ?= torch==2.13.0
export MLFLOW_DISABLE_TELEMETRY ?= true

.PHONY: install demo test bench bench-scale tables ablation tune-demo clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	# cn_clip's model code for datasets.clip_features (and its tests); --no-deps: see pyproject's `clip` extra
	$(PY) -m pip install --quiet --no-deps "cn_clip>=1.5" "six>=1.16"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m runners.compare --suite benchmarks/default.toml

# Test files spread over TEST_WORKERS processes (pytest-xdist; a file's tests stay together, so
# its module fixtures are built once): 10.5 instead of 21.5 minutes on 2 cores.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: install
	$(PY) -m pip install --quiet -e ".[test,bench]"
	$(PY) -m benchmarks.bench_metrics

# 2,000 queries against memory-mapped databases of 1M / 3M / 10M items (~1 GB of .npy files
# made once under $$TMPDIR); results in benchmarks/results/metrics.md.
bench-scale: install
	$(PY) -m pip install --quiet -e ".[test,bench]"
	$(PY) -m benchmarks.bench_metrics --scale

# The comparison tables: every suite of benchmarks/fair/ (every method x 16/32/64 bits x 3 seeds,
# the papers' defaults and the shared stopping rule) -> benchmarks/results/tables-<suite>.md.
# Hours on 2 CPU cores (SSAH's paper schedule dominates); finished cells are reused from bench.db.
tables: install
	$(PY) -m benchmarks.tables --workers 2

# SAM's ablations (benchmarks/ablation/*.toml: real Wikipedia, UCI multiple features, synthetic
# Wikipedia and MIRFlickr): each variant minus full SAM with paired p-values ->
# benchmarks/results/tables-sam-ablation-<suite>.md (10 configurations x 5 seeds per data set;
# on 2 CPU cores about 45 minutes for synthetic MIRFlickr and 3 hours for synthetic Wikipedia).
ablation: install
	$(PY) -m benchmarks.tables --suites benchmarks/ablation/*.toml --ablation-of SAM --workers 2

# Optuna study of SAM's margins on the demo data (validation split only); report in the output.
tune-demo: install
	$(PY) -m runners.tune --method sam --dataset synthetic-mirflickr --dataset-option n_items=5000 \
	  --dataset-option n_query=500 --dataset-option n_train=2200 --dataset-option n_validation=300 \
	  --bits 32 --trials 12

clean:
	rm -rf $(VENV) mlflow.db mlruns mlartifacts optuna.db .pytest_cache
