# airflow_cloud_paas: everything installs from this repository's own files.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
# Extras the test suite needs; `make install EXTRAS=all` for every cloud and service.
EXTRAS ?= test,spark,postgres,aws,docker,kubernetes,openstack,gcp,azure,condor,xcache,celery,fab,galaxy,training
# What `make run` needs: the local backend's Spark cluster and Galaxy's client (bioblend; Galaxy itself: make galaxy-runtime).
RUN_EXTRAS ?= spark,galaxy

# Debian packages the tests run for real (XRootD origin and XCache servers; SLURM's slurmctld, slurmd and
# commands from slurm-wlm, with munge's munged).
SYSTEM_PACKAGES := xrootd-server xrootd-client xrootd-plugins libxrootd-server-dev g++ slurm-wlm munge

.PHONY: install system-deps test lint run bench clean lock wheel-check

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

# one stamp per set of extras: .installed-<extras>
$(VENV)/.installed-%: $(BIN)/activate pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e ".[$*]"
	touch $@

install: $(VENV)/.installed-$(EXTRAS) system-deps

# apt only when something is missing (root, or passwordless sudo); otherwise say what to install
system-deps:
	@if ! command -v xrootd >/dev/null || ! command -v xrdpfc_print >/dev/null || ! command -v g++ >/dev/null \
		|| [ ! -f /usr/include/xrootd/XrdPfc/XrdPfcDecision.hh ] \
		|| [ ! -x /usr/sbin/slurmctld ] || [ ! -x /usr/sbin/slurmd ] || [ ! -x /usr/sbin/munged ] \
		|| ! command -v sbatch >/dev/null || ! command -v scontrol >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
		else echo "install the Debian packages $(SYSTEM_PACKAGES) (needed by the XCache and SLURM tests)"; exit 1; fi; \
		$$SUDO apt-get install -y -q $(SYSTEM_PACKAGES) || \
			{ $$SUDO apt-get update -q && $$SUDO apt-get install -y -q $(SYSTEM_PACKAGES); }; \
	fi

lint: install
	$(BIN)/ruff check airflow_cloud_paas hooks operators sensors triggers dags tests bench

# Two pytest processes at once, each with its own AIRFLOW_HOME (tests/conftest.py): the integration suites
# mostly wait on servers (Airflow, moto, Spark, XRootD), so they overlap well with the unit tests.
test: install lint
	@log=$$(mktemp); \
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/integration >$$log 2>&1 & pid=$$!; \
	$(BIN)/python -m pytest -q -p no:cacheprovider tests --ignore=tests/integration; unit=$$?; \
	wait $$pid; integration=$$?; echo "== tests/integration"; cat $$log; rm -f $$log; \
	test $$unit = 0 && test $$integration = 0

# only what a local run needs (not the test tools nor the clouds' SDKs, nor the XCache system packages)
run: $(VENV)/.installed-$(RUN_EXTRAS) portal-ui
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m airflow_cloud_paas.standalone

# the wheel in a fresh venv, outside the checkout (4 minutes; not part of `make test`)
wheel-check:
	PYTHON=$(PYTHON) .ci/wheel_check.sh

bench: install
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Regenerate the lock (every extra resolved together) after changing dependencies.
lock: $(BIN)/activate
	$(BIN)/python .ci/lock.py

clean:
	rm -rf $(VENV) .airflow build *.egg-info

# The tests' OpenID Connect provider (npm oidc-provider under Node.js 20+, tests/oidc), from its lock file.
# Without npm the OIDC tests skip, saying what to install.
.PHONY: oidc-provider
install: oidc-provider
oidc-provider: tests/oidc/node_modules/.package-lock.json
tests/oidc/node_modules/.package-lock.json: tests/oidc/package.json tests/oidc/package-lock.json
	@if command -v npm >/dev/null; then cd tests/oidc && npm ci --no-audit --no-fund; \
	else echo "install Node.js 20+ and npm to run the OIDC tests (tests/oidc); they skip without"; fi

# The portal (issue 13): its React app in ui/ is built into the package (airflow_cloud_paas/plugin/portal_dist,
# git-ignored, shipped in the wheel as package data) where the plugin serves it to the Airflow UI; its browser
# test drives Debian's chromium. Without npm the bundle is skipped with a note (the portal page says to build it).
PORTAL_BUNDLE := airflow_cloud_paas/plugin/portal_dist/portal.js
BROWSER_PACKAGES := chromium
.PHONY: portal-ui portal-ui-test browser-deps

install: portal-ui
system-deps: browser-deps
test: portal-ui-test

portal-ui: $(PORTAL_BUNDLE)

$(PORTAL_BUNDLE): ui/package.json ui/package-lock.json ui/vite.config.ts ui/tsconfig.json $(wildcard ui/src/*)
	@if command -v npm >/dev/null; then cd ui && npm ci --no-audit --no-fund && npm run build; \
	else echo "npm is missing: the portal's UI is not built (install Node 20 and run make portal-ui)"; fi

# the form generation and constraint checks (vitest, well under a second)
portal-ui-test: portal-ui
	@if [ -d ui/node_modules ]; then cd ui && npx vitest run; fi

browser-deps:
	@if ! command -v chromium >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
		else echo "install the Debian package $(BROWSER_PACKAGES) (needed by the portal's browser test)"; exit 1; fi; \
		$$SUDO apt-get install -y -q $(BROWSER_PACKAGES) || \
			{ $$SUDO apt-get update -q && $$SUDO apt-get install -y -q $(BROWSER_PACKAGES); }; \
	fi

# Galaxy (issue 15): the local backend runs a real Galaxy from its own virtual environment (1.6 GB; Galaxy pins
# packages Airflow cannot share), built once per machine outside the checkout and reused by every clone (CI
# included); galaxy-tool-shed (a Tool Shed, for the flavour tests; no other dependency) goes in the same one.
# CLOUD_PAAS_GALAXY_VENV points the driver and the tests at it. Galaxy 26.1.2 pins a certifi PyPI lacks here:
# 26.1.1 is the newest that installs (../shared/FACTS.md).
GALAXY_VERSION := 26.1.1
export CLOUD_PAAS_GALAXY_VENV ?= $(HOME)/.cache/airflow_cloud_paas/galaxy-$(GALAXY_VERSION)
.PHONY: galaxy-runtime
install: galaxy-runtime
galaxy-runtime: $(CLOUD_PAAS_GALAXY_VENV)/.installed-with-tool-shed

$(CLOUD_PAAS_GALAXY_VENV)/.installed-with-tool-shed:
	$(PYTHON) -m venv $(CLOUD_PAAS_GALAXY_VENV)
	$(CLOUD_PAAS_GALAXY_VENV)/bin/pip install -q -U pip
	$(CLOUD_PAAS_GALAXY_VENV)/bin/pip install -q "galaxy==$(GALAXY_VERSION)" "galaxy-tool-shed==$(GALAXY_VERSION)"
	touch $@

# DEEPaaS (issue 16): the local backend serves trained models through the real DEEPaaS V2 API (deepaas-run) from
# its own virtual environment (deepaas 2.6.0 needs marshmallow<4, webargs 5 and Werkzeug 2, which Airflow's venv
# cannot share), built once per machine outside the checkout like Galaxy's. torch at the exact version (the local
# CPU wheel; any other spec downloads GBs), scikit-learn for the train endpoint's digits, and our plugin
# (cloud_paas_deepaas, airflow_cloud_paas/services/training/deepaas_plugin) installed from a copy, so the checkout
# gets no build/ or egg-info. The stamp follows the plugin's sources: `make deepaas-runtime` reinstalls it after a
# change. CLOUD_PAAS_DEEPAAS_VENV points the driver and the tests at it.
DEEPAAS_VERSION := 2.6.0
DEEPAAS_PLUGIN := airflow_cloud_paas/services/training/deepaas_plugin
export CLOUD_PAAS_DEEPAAS_VENV ?= $(HOME)/.cache/airflow_cloud_paas/deepaas-$(DEEPAAS_VERSION)
.PHONY: deepaas-runtime
install: deepaas-runtime
deepaas-runtime: $(CLOUD_PAAS_DEEPAAS_VENV)/.installed-plugin

$(CLOUD_PAAS_DEEPAAS_VENV)/.installed-plugin: $(DEEPAAS_PLUGIN)/pyproject.toml $(wildcard $(DEEPAAS_PLUGIN)/cloud_paas_deepaas/*.py)
	$(PYTHON) -m venv $(CLOUD_PAAS_DEEPAAS_VENV)
	$(CLOUD_PAAS_DEEPAAS_VENV)/bin/pip install -q "deepaas==$(DEEPAAS_VERSION)" "torch==2.13.0" pillow numpy scikit-learn
	tmp=$$(mktemp -d) && cp -r $(DEEPAAS_PLUGIN)/. $$tmp && \
		$(CLOUD_PAAS_DEEPAAS_VENV)/bin/pip install -q --force-reinstall --no-deps $$tmp; rc=$$?; rm -rf $$tmp; exit $$rc
	touch $@
