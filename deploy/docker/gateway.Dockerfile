# asrgw-gateway: the customer and admin API, the job workers and the `asrgw` CLI; no torch.
# Built from the repository root (docs/deploy.md#images):
#
#   make images
#   docker build -f deploy/docker/gateway.Dockerfile --build-arg VERSION=0.1.0 \
#       -t asrgw-gateway:0.1.0 .
#
# BASE_IMAGE: any Debian bookworm image with python3 (3.11 or newer) and its venv module.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS requirements
# No extra: the gateway needs the project's own dependencies only.
ARG EXTRAS=
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
# pip's own variables, for the build stages only: a mirror (PIP_INDEX_URL) or a wheelhouse
# (PIP_FIND_LINKS with PIP_NO_INDEX=1) in place of PyPI. None of them reaches the image.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
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
LABEL org.opencontainers.image.title="asrgw-gateway" \
      org.opencontainers.image.description="asr-billing-gateway: metered speech recognition gateway (OpenAI-compatible API, exact per-key billing)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed, unprivileged uid (Kubernetes' runAsNonRoot checks a numeric one); its home holds the
# embedded SQLite ledger and job audio when no volume or PostgreSQL is given.
RUN groupadd --system --gid 10001 asrgw \
    && useradd --system --uid 10001 --gid asrgw --home-dir /var/lib/asrgw --shell /usr/sbin/nologin asrgw \
    && mkdir -p /var/lib/asrgw/job-audio \
    && chown -R asrgw:asrgw /var/lib/asrgw
# The dependencies in one layer, the project in a small one above it: a new version of the code
# ships a few hundred kilobytes.
COPY --from=deps /opt/asrgw /opt/asrgw
COPY --from=project /wheels /tmp/wheels
RUN /opt/asrgw/bin/pip install --no-deps --no-index /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels
COPY deploy/docker/healthcheck.py /opt/asrgw/healthcheck.py
ENV PATH=/opt/asrgw/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GATEWAY_ENVIRONMENT=production \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000 \
    GATEWAY_JOB_STORAGE_DIR=/var/lib/asrgw/job-audio \
    HEALTHCHECK_URL=http://127.0.0.1:8000/health/ready
WORKDIR /var/lib/asrgw
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/opt/asrgw/bin/python", "/opt/asrgw/healthcheck.py"]
# Exec form: asrgw (uvicorn) is PID 1 and gets SIGTERM itself; it drains before it exits
# (GATEWAY_SHUTDOWN_GRACE_SECONDS: give the container that long plus a few seconds to stop).
ENTRYPOINT ["asrgw"]
CMD ["gateway"]
