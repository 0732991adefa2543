# asrgw-node: an inference node on the CPU with the `node` extra (its default engine and the
# model that engine ships with). Built from the repository root (docs/deploy.md#images):
#
#   make images
#   docker build -f deploy/docker/node.Dockerfile --build-arg VERSION=0.1.0 -t asrgw-node:0.1.0 .
#
# BASE_IMAGE: any Debian bookworm image with python3 (3.11 or newer) and its venv module.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS requirements
# The extras installed beside the node: `node` is the default engine.
ARG EXTRAS=node
COPY pyproject.toml /src/
# The requirements alone: an edit of the code, or of pyproject.toml that leaves them as they
# are, reuses the dependency layer below.
RUN python3 -c "import sys, tomllib; \
project = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
extras = [name for name in sys.argv[1].split(',') if name]; \
optional = project.get('optional-dependencies', {}); \
print('\n'.join(project['dependencies'] + [r for name in extras for r in optional.get(name, [])]))" \
    "${EXTRAS}" > /requirements.txt

FROM ${BASE_IMAGE} AS deps
# pip's own variables, for the build stages only (see gateway.Dockerfile). The extra index
# serves torch's CPU build, for an extra that needs torch: PyPI's is the CUDA build, far larger.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
COPY --from=requirements /requirements.txt /src/requirements.txt
RUN python3 -m venv /opt/asrgw \
    && /opt/asrgw/bin/pip install --requirement /src/requirements.txt

FROM deps AS project
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
WORKDIR /src
COPY pyproject.toml README.md ./
COPY billing billing
COPY gateway gateway
COPY inference inference
COPY migrations migrations
RUN /opt/asrgw/bin/pip wheel --no-deps --wheel-dir /wheels .

FROM ${BASE_IMAGE}
ARG VERSION=unknown
LABEL org.opencontainers.image.title="asrgw-node" \
      org.opencontainers.image.description="asr-billing-gateway inference node (CPU)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed, unprivileged uid; its home is where engines cache models fetched from a hub.
RUN groupadd --system --gid 10001 asrgw \
    && useradd --system --uid 10001 --gid asrgw --home-dir /var/lib/asrgw --shell /usr/sbin/nologin asrgw \
    && mkdir -p /var/lib/asrgw \
    && chown asrgw:asrgw /var/lib/asrgw
# The dependencies in one layer, the project in a small one above it: a new version of the code
# ships a few hundred kilobytes.
COPY --from=deps /opt/asrgw /opt/asrgw
COPY --from=project /wheels /tmp/wheels
RUN /opt/asrgw/bin/pip install --no-deps --no-index /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels
COPY deploy/docker/healthcheck.py /opt/asrgw/healthcheck.py
ENV PATH=/opt/asrgw/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/asrgw \
    INFERENCE_ENVIRONMENT=production \
    INFERENCE_HOST=0.0.0.0 \
    INFERENCE_PORT=8001 \
    HEALTHCHECK_URL=http://127.0.0.1:8001/health/ready
WORKDIR /var/lib/asrgw
USER 10001:10001
EXPOSE 8001
# Ready only once every model is loaded and warmed: the start period covers a first load.
HEALTHCHECK --interval=10s --timeout=5s --start-period=180s --retries=3 \
    CMD ["/opt/asrgw/bin/python", "/opt/asrgw/healthcheck.py"]
# Exec form: asrgw (uvicorn) gets SIGTERM itself and drains before it exits
# (INFERENCE_SHUTDOWN_GRACE_SECONDS). Engines that decode in a child process want an init to
# reap it: `docker run --init`, Compose `init: true`.
ENTRYPOINT ["asrgw"]
CMD ["node"]
