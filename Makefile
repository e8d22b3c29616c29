# Two commands for a newcomer: `make run` (the main job) and `make test` (the whole suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db

.PHONY: install test lint docs train run bench clean browser

# uv installs the same pins several times faster than pip; INSTALLER=pip keeps the plain path.
# uv does not read pip's configuration, so it is handed pip's find-links (where a local CPU
# build of torch may lie) explicitly. Unlike pip, uv writes no bytecode unless asked: without
# it, and with PYTHONDONTWRITEBYTECODE set (as in many containers, and here), every process
# compiled torch, Ray and MLflow from source again: 12.7 s of imports instead of 5.0 s, in each
# Ray worker and Serve replica too.
INSTALLER ?= uv
export UV_FIND_LINKS ?= $(shell $(PY) -m pip config get global.find-links 2>/dev/null)

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "installing pinned dependencies into $(VENV) with $(INSTALLER) (about 40 s with uv from an empty cache, 4-6 min with pip)"
ifeq ($(INSTALLER),uv)
	$(BIN)/pip install -q --disable-pip-version-check uv -c constraints.txt
	$(BIN)/uv pip install --compile-bytecode --python $(BIN)/python -r requirements-dev.txt -c constraints.txt
else
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
endif
	$(BIN)/python -c "import torch, ray, mlflow, backtrader"  # fail here, not mid-test, on a broken install
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# The browser checks (/docs, HTML reports) need Debian's chromium; installed when missing.
browser:
	@command -v chromium >/dev/null || { echo "installing chromium for the browser tests"; \
		apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && \
		apt-get install -y -q chromium >/dev/null; }; }

test: $(STAMP) browser
	$(BIN)/ruff check .
	# Two workers, one test file each at a time: most of the suite waits on Ray, Serve and
	# subprocesses, so two files side by side use the two cores a serial run leaves idle.
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

docs: $(STAMP)
	$(BIN)/mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

train: $(STAMP)
	$(BIN)/mltrade train --model-type lstm --symbol BTC/USDT --data-path sample \
		--days-back 365 --epochs 30 --model-name lstm_price_forecast

run: $(STAMP)
	$(BIN)/mltrade serve

bench: $(STAMP)
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf mlruns mlflow.db ray_results reports data/cache site
