# The payment service image: gunicorn serving Django, SQLite on the /data volume.
# Runs as UID 10001 with a read-only root filesystem; writes only to /data and /tmp.
#
# No `# syntax=` line: BuildKit then uses its built-in Dockerfile frontend instead of
# pulling one from Docker Hub, so a builder that reaches only a registry mirror (the
# daemon's or buildkitd's mirror setting) builds it; the legacy builder does too.
#
# Base image pinned by version tag in both stages (written out, not through an ARG, so
# scanners such as checkov can see the pin); bump both together. Not by digest yet: no
# digest could be checked against the registry where this was written, and a digest
# copied unchecked would be worse than none. Renovate (renovate.json) pins the digest in
# its first pull request, read from the registry, and keeps tag and digest current.

# --- build: install the pinned dependencies into a virtualenv -----------------------------
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# The runtime lock (make lock): every package pinned with its hashes; pip refuses any
# file whose hash is not in it, and any package the lock does not name. Wheels only: an
# sdist would be built with build tools fetched unchecked (every locked package has
# wheels for Linux on x86_64 and arm64).
COPY requirements/run.txt requirements/
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-virtualenv --only-binary=:all: --require-hashes -r requirements/run.txt
COPY manage.py gunicorn.conf.py ./
COPY payment_project/ payment_project/
COPY payment_app/ payment_app/
# Static files collected at build time: the running container cannot write them.
RUN DJANGO_SECRET_KEY=collectstatic-only /opt/venv/bin/python manage.py collectstatic --noinput --verbosity 0

# --- runtime: no compilers, no pip cache, non-root ---------------------------------------
FROM python:3.11.14-slim-bookworm
RUN groupadd --system --gid 10001 payment \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin payment \
 && mkdir -p /data && chown 10001:10001 /data
# DL3064 flags names like *SECRET_KEY*: this one holds a path, the key itself is made at
# first start on the volume (or mounted from a Secret), never baked into the image.
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DATABASE_PATH=/data/payment.sqlite3 \
    DJANGO_SECRET_KEY_FILE=/data/secret_key \
    STATIC_ROOT=/app/staticfiles \
    PORT=8000 \
    METRICS_PORT=9000
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/staticfiles /app/staticfiles
COPY manage.py gunicorn.conf.py ./
COPY scripts/entrypoint scripts/entrypoint
COPY payment_project/ payment_project/
COPY payment_app/ payment_app/
RUN python -m compileall -q /app/payment_project /app/payment_app
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000 9000
# For `docker run`; Kubernetes ignores it and uses the Deployment's probes instead.
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen(u.Request(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/healthz\", headers={'Host': 'localhost', 'Accept': 'application/json'}), timeout=2)"]
# SIGTERM (also the default): gunicorn stops accepting and lets requests in flight finish
# within its graceful timeout (GUNICORN_GRACEFUL_TIMEOUT, 20 s). `docker stop` sends SIGKILL
# after only 10 s unless told otherwise: use `docker stop --time 30` (or `docker run
# --stop-timeout 30`, Compose's `stop_grace_period: 30s`). Kubernetes uses the pod's
# terminationGracePeriodSeconds instead (docs/reliability.md, "Stopping a pod").
STOPSIGNAL SIGTERM
ENTRYPOINT ["/app/scripts/entrypoint"]
