PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-timm-floor lint demo format clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/pytest -q -n auto --maxprocesses 8 --durations=15
	$(MAKE) test-timm-floor

# The oldest timm that pyproject.toml accepts, in a folder of its own: the tests of everything that
# reaches into timm's modules (attention layers, ViT internals, MAE blocks) must pass with it too.
TIMM_FLOOR := $(shell sed -n 's/.*"timm>=\([0-9.]*\)".*/\1/p' pyproject.toml)
test-timm-floor: $(STAMP)
	$(BIN)/pip install -q --no-deps --target .cache/timm-$(TIMM_FLOOR) timm==$(TIMM_FLOOR)
	PYTHONPATH=.cache/timm-$(TIMM_FLOOR) $(BIN)/python -c \
		"import timm; assert timm.__version__ == '$(TIMM_FLOOR)', timm.__version__"
	PYTHONPATH=.cache/timm-$(TIMM_FLOOR) $(BIN)/pytest -q -p no:cacheprovider \
		tests/test_transfer.py tests/test_models.py tests/test_functional.py \
		tests/test_selection.py tests/test_pretrain.py tests/test_analysis.py \
		tests/test_transformers.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

demo: $(STAMP)
	$(BIN)/attnxfer demo

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
