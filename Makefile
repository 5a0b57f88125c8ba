# Set-up and entry points. `make demo` and `make test` do everything on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_EVENTS ?= 200000

.PHONY: setup demo test test-fast lint docs docs-check report-png flink-job-server kafka bench bench-streaming clean

setup: $(VENV)/.installed

# The package itself, editable (the feedcheck commands in .venv/bin), with its dev extra, at the
# exact versions of requirements*.txt (the lock; the ranges are in pyproject.toml).
$(VENV)/.installed: pyproject.toml requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt -r requirements-dev.txt -e '.[dev]'
	touch $@

flink-job-server:
	bash scripts/build_flink_job_server.sh

# Kafka on Flink: the expansion service jar and the broker's jars (the tests start their broker).
kafka:
	bash scripts/build_kafka_expansion_service.sh
	bash scripts/kafka.sh fetch

# The main job on a sample the project generates itself (faults injected, expected summary beside it).
demo: setup
	$(PY) -m tests.tooling.synthetic --events $(DEMO_EVENTS) --output sample/feed.jsonl.gz --expected sample/expected_summary.json
	$(VENV)/bin/feedcheck --input sample/feed.jsonl.gz --output out/demo --overwrite
	$(PY) -m tests.tooling.synthetic --check out/demo/summary.json --expected sample/expected_summary.json && echo "summary.json = what the generator injected"

# The whole suite (unit, beam, integration: the Pub/Sub emulator, Kafka, Flink, gcloud). CI runs this.
test: setup flink-job-server kafka
	bash scripts/ensure_chromium.sh >/dev/null
	$(PY) -m pytest -q --durations=30 tests

# Unit and Beam tests only: no Flink jar, no emulator.
test-fast: setup
	$(PY) -m pytest -q -m "unit or beam" tests

# ruff (lint) on every file and mypy on beam_pipeline/core, as configured in pyproject.toml.
lint: setup
	$(PY) -m pytest -q tests/unit/test_lint.py

# The generated reference pages (options, output schemas) from the code, then the site (strict).
docs: setup
	$(PY) scripts/gen_docs.py
	$(VENV)/bin/mkdocs build --strict --quiet

# Every command in the docs' sh blocks runs as written: static checks, then the ones that need no service.
docs-check: setup
	$(PY) scripts/docs_check.py --run

# The README's screenshot of the data-quality report (the shared captures, a few faults injected),
# rendered by headless Chromium. Tests never rewrite it.
report-png: setup
	bash scripts/ensure_chromium.sh >/dev/null
	$(PY) -m tests.tooling.report_screenshot docs/report.png

bench: setup flink-job-server
	$(PY) -m bench

# Streaming on the Pub/Sub emulator (DirectRunner): a backlog after downtime, a burst, a live feed.
bench-streaming: setup
	$(PY) -m bench.streaming backlog --events 400000
	$(PY) -m bench.streaming burst --events 400000
	$(PY) -m bench.streaming live --rate 1000 --seconds 600 --records_per_message 100

clean:
	rm -rf out sample site .pytest_cache
