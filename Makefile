# twosv-panel: `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint format venv dev-venv migrate demo bench clean zendesk-app

$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(BIN)/.dev-installed: requirements.txt requirements-dev.txt $(BIN)/.installed
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed
dev-venv: $(BIN)/.dev-installed

migrate: venv
	$(BIN)/python manage.py migrate --noinput

demo: migrate
	$(BIN)/python manage.py demo_load --base-url http://$(HOST):$(PORT)

## Serve the demo on http://127.0.0.1:8000 with the embedded defaults (SQLite, eager Celery, local ATS).
run: demo
	$(BIN)/python manage.py runserver $(HOST):$(PORT) --noreload

lint: dev-venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DEBUG=$${DEBUG:-1} $(BIN)/mypy

format: dev-venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Lint, then the whole suite. DATABASE_URL / CELERY_BROKER_URL switch on PostgreSQL and a real worker.
test: lint
	DEBUG=$${DEBUG:-1} $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: dev-venv
	$(BIN)/python bench/run.py $(BENCH_ARGS)

## The Zendesk app's zip to upload as a private app (docs/integrations.md): no tools but Python.
ZENDESK_APP_ZIP ?= var/zendesk-app.zip
zendesk-app:
	mkdir -p $(dir $(abspath $(ZENDESK_APP_ZIP)))
	rm -f $(abspath $(ZENDESK_APP_ZIP))
	cd crm_plugin/zendesk_app && $(PYTHON) -m zipfile -c $(abspath $(ZENDESK_APP_ZIP)) manifest.json translations assets
	@echo "built $(ZENDESK_APP_ZIP)"

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
