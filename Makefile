# The two README commands. Each sets up .venv (pinned) itself, then runs.
SHELL := /bin/bash
VENV := $(CURDIR)/.venv/bin
export PATH := $(VENV):$(PATH)
export HF_HUB_DISABLE_TELEMETRY := 1
export NO_MKDOCS_2_WARNING := 1

.PHONY: pipeline test env docs

env:
	@bash scripts/setup-env.sh

## The default job: the DVC pipeline on the embedded offline benchmark -> results/tables, results/plots, MLflow.
## (`dvc repro` with a progress line per stage, then the reproduced-vs-committed verdict.)
pipeline: env
	sep-bench pipeline

## The test suite (CPU, offline).
test: env
	HF_HUB_OFFLINE=1 python -m pytest $(PYTEST_ARGS)

## The figures of README.md and docs/*.md, rendered from results/ into their marked blocks; then the site
## (`mkdocs serve` to browse it).
docs: env
	python scripts/render_docs.py
	mkdocs build --strict --site-dir site
