# Two entry points for a fresh machine: `make benchmark` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
OUT ?= runs/default

export HF_HUB_OFFLINE := 1
export PYTHONWARNINGS := ignore

.PHONY: install benchmark test lint smoke results perf paper-mini gpu-check clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# pip (not uv/poetry): torch/torchvision come from the machine's local wheels. The ray, slurm
# and wandb extras are installed too: the tests run sweeps through Ray and submitit, and log a
# run to W&B offline (wandb comes with avalanche-lib anyway).
$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt -e '.[dev,ray,slurm,wandb]'
	touch $(STAMP)

install: $(STAMP)

benchmark: $(STAMP)
	$(PY) run_benchmark.py --suite default --out $(OUT)

# The bf16 tests run first on the CPU's second oneDNN path (no AVX512-BF16/AMX instructions), then
# everything on the CPU's own path.
test: $(STAMP)
	ONEDNN_MAX_CPU_ISA=AVX512_CORE $(PY) -m pytest -n 2 tests/test_precision.py
	$(PY) -m pytest -n 2 --dist loadfile tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

smoke: $(STAMP)
	$(PY) run_benchmark.py --suite smoke --out runs/smoke

# The committed reference results: the standard suite, then records and report into results/data.
results: $(STAMP)
	$(PY) run_benchmark.py --suite standard --out runs/standard --workers 2 --quiet
	$(PY) -m results.publish runs/standard

perf: $(STAMP)
	$(PY) -m benchmarks.measure.perf
	$(PY) -m benchmarks.measure.perf --data

# The paper pipeline end to end on generated data (six layouts, random DeiT-Ti checkpoint).
paper-mini: $(STAMP)
	$(PY) -m benchmarks.data.synthetic runs/paper-mini-data
	$(PY) run_benchmark.py --suite paper-mini --data-root runs/paper-mini-data \
		--pretrained runs/paper-mini-data/deit_tiny_patch16_224.pth --out runs/paper-mini

# On a GPU machine: bf16 vs fp32, throughput, memory, kill-and-resume -> results/gpu.md.
gpu-check: $(STAMP)
	$(PY) -m benchmarks.measure.gpucheck --out results

clean:
	rm -rf runs .cache
