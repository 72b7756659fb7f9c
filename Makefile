# Kaizen Studio — the two commands a newcomer needs are `make dev` and `make test`.
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: dev dev-down test lint unit reliability crds cluster-up cluster-down cluster-status bootstrap

## Start the whole platform locally (control plane, CRDs, examples).
dev: bootstrap
	$(PYTHON) hack/dev.py up

dev-down:
	$(PYTHON) hack/dev.py down

## Install everything, lint, and run every test against a real control plane, PostgreSQL and Redis.
test: bootstrap lint
	$(PYTHON) hack/cluster.py build >/dev/null
	$(PYTHON) -m pytest -n 2 --dist worksteal $(PYTEST_ARGS)

bootstrap:
	PYTHON=$(PYTHON) bash hack/bootstrap.sh

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy
	lint-imports
	kaizen crds check
	kaizen-api openapi --check
	if command -v npm >/dev/null; then npm --prefix console run --silent check; fi
	hadolint Dockerfile

## Only the pure unit tests (no cluster, seconds).
unit:
	$(PYTHON) -m pytest -m unit

## The reliability suite at full size (5,000 Agents, 500-op bursts, long soaks; about
## an hour); `make test` runs its short form. Figures: .reliability/figures.jsonl.
reliability: bootstrap
	$(PYTHON) hack/cluster.py build >/dev/null
	KAIZEN_RELIABILITY=full $(PYTHON) -m pytest -m reliability $(PYTEST_ARGS)

## Regenerate the CRDs (crds/ and the chart) from the pydantic models.
crds:
	kaizen crds generate

cluster-up:
	$(PYTHON) hack/cluster.py up
cluster-down:
	$(PYTHON) hack/cluster.py down
cluster-status:
	$(PYTHON) hack/cluster.py status
