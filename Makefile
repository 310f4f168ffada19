# snapvol developer tasks (GNU make). `make test` alone works on a fresh Debian machine with
# python3.11 and no Docker: it makes the venv, starts (installing if needed) a Docker engine,
# installs restic and sshd if missing, gets a PostgreSQL 15 image (built locally when it cannot be
# pulled) and runs every test.

VENV ?= .venv
PY = $(VENV)/bin/python
# The interpreter the venv is made from.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
# Marks the last `pip install` into the venv; redone when pyproject.toml is newer.
STAMP = $(VENV)/.snapvol-installed
PYTEST_ARGS ?=
BENCH_ARGS ?=
# The image the tests, the benchmark and the demo run PostgreSQL from (printed by the script).
ENSURE_IMAGE = bash scripts/ensure-pg-image.sh

.DEFAULT_GOAL := help
.PHONY: help venv engine restic podman image snapvol-image test test-unit lint format man bench demo hooks clean distclean

help:
	@echo "make test       all tests (unit, integration, faults): venv, Docker engine, restic, PG image"
	@echo "make test-unit  unit tests only (no Docker)"
	@echo "make lint       ruff check, ruff format --check, mypy"
	@echo "make format     ruff format and ruff check --fix"
	@echo "make man        write docs/man/snapvol.1 from the commands' help (commit it)"
	@echo "make bench      benchmark (BENCH_ARGS=... passed to bench/bench.py)"
	@echo "make demo       run scripts/demo.sh"
	@echo "make snapvol-image  the snapvol image of this checkout (the compose sidecar's)"
	@echo "make venv | engine | restic | image | hooks | clean | distclean"

venv: $(STAMP)

# Debian's python3 lacks ensurepip until python3-venv (python3.X-venv) is installed: install it
# with apt when we are root, and make the venv again.
$(STAMP): pyproject.toml
	@set -e; \
	if [ ! -x "$(PY)" ] || ! "$(PY)" -m pip --version >/dev/null 2>&1; then \
	    if [ -z "$(PYTHON)" ]; then echo "make venv: no python3.11 or python3 found" >&2; exit 1; fi; \
	    echo "creating $(VENV) with $(PYTHON)"; \
	    rm -rf "$(VENV)"; \
	    if ! "$(PYTHON)" -m venv "$(VENV)"; then \
	        ver=$$("$(PYTHON)" -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	        if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	            echo "installing python$$ver-venv with apt"; \
	            export DEBIAN_FRONTEND=noninteractive; \
	            apt-get update -qq </dev/null >/dev/null || true; \
	            apt-get install -y -qq "python$$ver-venv" </dev/null >/dev/null \
	                || apt-get install -y -qq python3-venv </dev/null >/dev/null; \
	            rm -rf "$(VENV)"; \
	            "$(PYTHON)" -m venv "$(VENV)"; \
	        else \
	            echo "make venv: install python$$ver-venv (Debian/Ubuntu) and retry" >&2; exit 1; \
	        fi; \
	    fi; \
	fi
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,demo]'
	@touch $@

engine:
	bash scripts/ensure-docker.sh

# restic and OpenSSH's sshd from apt (the repository tests start sshd, SeaweedFS and rclone
# themselves, on 127.0.0.1).
restic:
	bash scripts/ensure-restic.sh

# Podman from apt (the Podman tests start its API service themselves, on a socket of their own).
podman:
	bash scripts/ensure-podman.sh

image: engine
	$(ENSURE_IMAGE)

# snapvol/snapvol:dev from this checkout (examples/sidecar/compose.yml runs it).
snapvol-image: venv engine
	PYTHON=$(PY) bash scripts/ensure-snapvol-image.sh

# The image is computed here (not passed from a prerequisite) so that a failure stops the run
# instead of running the tests with an empty SNAPVOL_PG_IMAGE. --durations: CI prints the 25 slowest.
# scripts/run-tests.sh: the parallel part on TEST_WORKERS (default 2) workers, then the serial one.
TEST_WORKERS ?= 2
test: venv engine restic podman
	img=$$($(ENSURE_IMAGE)) && SNAPVOL_PG_IMAGE=$$img PYTHON=$(PY) TEST_WORKERS=$(TEST_WORKERS) \
	    bash scripts/run-tests.sh $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy snapvol

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The manual, from the same source as --help (snapvol/cli/helptext.py and the commands);
# tests/unit/test_cli_help.py fails while the committed page is stale.
man: venv
	$(PY) scripts/gen-man.py

bench: venv engine image restic
	img=$$($(ENSURE_IMAGE)) && SNAPVOL_PG_IMAGE=$$img \
	    PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) bench/bench.py $(BENCH_ARGS)

demo: venv engine
	img=$$($(ENSURE_IMAGE)) && SNAPVOL_PG_IMAGE=$$img \
	    PATH="$(abspath $(VENV))/bin:$$PATH" VIRTUAL_ENV="$(abspath $(VENV))" bash scripts/demo.sh

hooks:
	bash .githooks/setup.sh

clean:
	rm -rf .pytest_cache .ruff_cache .mypy_cache .hypothesis build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# clean, and the venv too (Docker images and volumes are left alone).
distclean: clean
	rm -rf $(VENV)
