# syntax=docker/dockerfile:1
# One image for all four services: `docker run IMAGE services.gateway` (ENTRYPOINT is `python -m`).
# Kubernetes manifests: deploy/k8s (they set args, probes, and a read-only root filesystem).

# Pinned by tag; bump deliberately. Release pipelines may also pin the digest (@sha256:...).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --- build: install the project (runtime dependencies only, no dev/test extras) into a venv ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/huitou
WORKDIR /src
# README.md* : pyproject names README.md as the long description; the glob keeps the build
# working while the file does not exist yet.
COPY pyproject.toml README.md* ./
COPY shared ./shared
COPY services ./services
# `pip install .` (not `.[dev]` / `.[test]`): pytest, playwright and friends stay out of the image.
RUN /opt/huitou/bin/pip install --no-cache-dir . \
    && /opt/huitou/bin/python -c "import services, shared"

# --- runtime ---
FROM ${PYTHON_IMAGE}
# Numeric UID/GID (>= 10000, matching runAsUser in deploy/k8s): runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 huitou \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin huitou
COPY --from=build /opt/huitou /opt/huitou
ENV PATH=/opt/huitou/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HUITOU_VAR_DIR=/tmp/huitou
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000 8001 8002 8003

# Docker/Compose only (Kubernetes ignores HEALTHCHECK and uses the probes): GET /healthz on the
# port of whichever service this container runs. HUITOU_HEALTHCHECK_PORT picks one explicitly;
# otherwise each HUITOU_<NAME>_PORT (or its default) is tried and any 200 counts.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request\nports = [os.environ['HUITOU_HEALTHCHECK_PORT']] if os.environ.get('HUITOU_HEALTHCHECK_PORT') else [os.environ.get(f'HUITOU_{n}_PORT', d) for n, d in (('GATEWAY', '8000'), ('INGEST', '8001'), ('SCORING', '8002'), ('OUTREACH', '8003'))]\nfor port in ports:\n    try:\n        with urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=3) as r:\n            sys.exit(0 if r.status == 200 else 1)\n    except OSError:\n        pass\nsys.exit(1)"]

ENTRYPOINT ["python", "-m"]
CMD ["services.gateway"]
