# goodput: `make demo` runs the main job, `make test` the whole suite. Both set everything up themselves.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup system-deps venv cluster-binaries images test lint unit e2e demo crds bench clean

setup: system-deps venv

# kube-apiserver, kube-controller-manager, kubectl, etcd and Prometheus built from the Go module proxy,
# cached in ~/.cache/goodput; only the first run builds (about 10 minutes on 2 cores), with progress.
cluster-binaries: venv
	$(PY) -m e2e.build

# The base (Debian bookworm from mmdebstrap), pause, operator and worker images, built with podman and
# tagged VERSION-DIGEST; podman's storage under ~/.cache/goodput keeps them, so only changed inputs rebuild.
images: system-deps venv
	$(PY) -m e2e.images

# Debian's packages: prometheus (promtool and a Prometheus for the in-process tests; it has no Kubernetes
# discovery, so the e2e stack builds its own), and the real node's containerd, runc, CNI plugins, iptables,
# nftables, iproute2, plus podman and mmdebstrap for `make images`. Installs only what is missing.
DEBIAN_PACKAGES := prometheus:prometheus containerd:containerd runc:runc \
  /usr/lib/cni/bridge:containernetworking-plugins podman:podman mmdebstrap:mmdebstrap \
  iptables:iptables nft:nftables ip:iproute2
system-deps:
	@missing=""; for pair in $(DEBIAN_PACKAGES); do \
	  tool=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$tool >/dev/null 2>&1 || [ -x "$$tool" ] || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  $$SUDO systemctl disable --now prometheus containerd >/dev/null 2>&1 || true; fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

crds: venv
	$(PY) -m goodput.crds

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

unit: setup
	$(PY) -m pytest -m "not e2e" -q

e2e: setup cluster-binaries images
	$(PY) -m pytest -m e2e -q

test: setup cluster-binaries images lint
	$(PY) -m pytest -q

demo: setup cluster-binaries images
	$(PY) -m e2e.demo

bench: setup
	@mkdir -p out
	$(PY) bench/plan_speed.py --json out/plan_speed.json

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
