# One image for every role: `collab worker` (default), `collab router`, and the operator
# commands (`collab status`, `collab autoscale`, ...).
#
#   docker build -t collab:latest .
#   docker run --rm -p 8081:8081 collab:latest              # a worker, embedded storage in /data
#   docker run --rm -p 8080:8080 collab:latest router --workers host:8081
#
# The builder and runtime stages use the same base image, so the venv's interpreter link
# (/usr/local/bin/python3) is valid in the runtime stage. Every dependency ships manylinux wheels
# (pycrdt, orjson, uvloop), so no compiler is installed anywhere. Node.js is used only by the
# first stage, which builds the browser workspace; the image runs without it.

FROM node:20-bookworm-slim AS web

# The lock file first: the `npm ci` layer is reused until the dependencies change.
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY web/build.mjs ./
COPY web/src ./src
# Writes /src/router/webapp (index.html + hashed assets), the router's package data.
RUN node build.mjs


FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv

WORKDIR /src
# Only what the distribution is built from (tests/, bench/, docs/ stay out of the image).
COPY pyproject.toml ./
COPY contract ./contract
COPY worker ./worker
COPY router ./router
COPY ops ./ops
COPY --from=web /src/router/webapp ./router/webapp
# `collab --help` proves the console script imports in the venv it will run from; pip and
# setuptools are not needed at run time, so they do not ship.
RUN /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/collab --help > /dev/null \
    && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools


FROM python:3.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="collab" \
      org.opencontainers.image.description="Real-time collaboration backend: Yjs session workers, consistent-hashing router, operator CLI"

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it and volumes can be
# chowned to it. /workspace is the git scratch (WORKSPACE_DIR); /data holds embedded storage
# when no MinIO is configured (a single container).
RUN groupadd --system --gid 10001 collab \
    && useradd --system --uid 10001 --gid collab --create-home --home-dir /home/collab \
        --shell /usr/sbin/nologin collab \
    && mkdir -p /workspace /data/storage \
    && chown -R 10001:10001 /workspace /data

COPY --from=builder /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:${PATH}" \
    LOG_FORMAT=json \
    WORKSPACE_DIR=/workspace \
    STORAGE_DIR=/data/storage \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /workspace
USER 10001

# 8080 router, 8081 worker (the defaults of PORT).
EXPOSE 8080 8081

# `collab health` asks http://127.0.0.1:$PORT/healthz (liveness, still 200 while draining, so a
# draining worker is never killed for being "unhealthy"); with PORT unset it tries 8081, then
# 8080. Swarm also waits for "healthy" before it stops the old task of a start-first update.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["collab", "health"]

# Exec form: `collab` is PID 1 and gets SIGTERM itself; `collab worker` / `collab router`
# exec() into the server, which keeps PID 1 and drains on SIGTERM (flush, hand sessions off,
# close clients with 1012) within DRAIN_TIMEOUT_MS. Give it a stop grace period above that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["collab"]
CMD ["worker"]
