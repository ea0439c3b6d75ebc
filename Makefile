# goodput: `make demo` runs the main job, `make test` the whole suite. Both set everything up themselves.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup system-deps venv cluster-binaries test lint unit e2e demo crds bench clean

setup: system-deps venv

# kube-apiserver, kube-controller-manager, kubectl, etcd and Prometheus built from the Go module proxy,
# cached in ~/.cache/goodput; only the first run builds (about 10 minutes on 2 cores), with progress.
cluster-binaries: venv
	$(PY) -m e2e.build

# Debian's prometheus package gives promtool and a Prometheus for the in-process tests (it has no
# Kubernetes discovery, so the e2e stack builds its own); skipped when already present.
system-deps:
	@command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus package"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  $$SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true; }

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

crds: venv
	$(PY) -m crds

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

unit: setup
	$(PY) -m pytest -m "not e2e" -q

e2e: setup cluster-binaries
	$(PY) -m pytest -m e2e -q

test: setup cluster-binaries lint
	$(PY) -m pytest -q

demo: setup cluster-binaries
	$(PY) -m e2e.demo

bench: setup
	@mkdir -p out
	$(PY) bench/plan_speed.py --json out/plan_speed.json

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
