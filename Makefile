# The tasks contributors and CI run; each is the command the README gives.
.PHONY: help setup test test-fast demo ci lint format typecheck layers check bench fuzz

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup:  ## make ./.venv with candlewax and the dev tools
	bash -c 'source scripts/env.sh'

test:  ## the whole suite, real broker and multi-process runs included (what CI runs)
	bash scripts/test

test-fast:  ## the suite without the slow tests (broker runs, processes)
	bash scripts/test -m "not slow"

demo:  ## the main job end to end on the embedded broker
	bash scripts/demo

ci:  ## what CI runs on a clean clone (installs Debian packages the tests need first)
	bash .ci/run

lint:  ## ruff: lint and format check
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format:  ## ruff: fix what can be fixed, format
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

typecheck:  ## mypy over the packages
	.venv/bin/mypy candlewax config flows operators sources sinks tools

layers:  ## import-linter: each layer imports only the ones below it
	.venv/bin/lint-imports

check: lint typecheck layers  ## everything a pre-commit run checks

bench:  ## throughput benchmarks (minutes)
	.venv/bin/python -m bench.throughput_file
	.venv/bin/python -m bench.throughput_kafka
	.venv/bin/python -m bench.reconcile

fuzz:  ## a million hostile messages through the flow
	.venv/bin/python -m bench.fuzz
