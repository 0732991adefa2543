# asrgw-node-gpu: an inference node for NVIDIA GPUs: CUDA 12 with cuDNN 9 (what CTranslate2 and
# torch's CUDA 12 builds load), the `node` extra and the FunASR engine. Needs the NVIDIA
# container toolkit on the host (`docker run --gpus all`, Kubernetes' nvidia.com/gpu).
# Built from the repository root (docs/deploy.md#images):
#
#   make image-node-gpu
#   docker build -f deploy/docker/node-gpu.Dockerfile --build-arg VERSION=0.1.0 \
#       -t asrgw-node-gpu:0.1.0 .
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS python
# Ubuntu 24.04's Python (3.12) with its venv module; nothing else from apt. Unpinned: the
# archive keeps only the newest build of each, so a pin would break the build at its next update.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install --yes --no-install-recommends \
        python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

FROM python AS requirements
# The extras installed beside the node: the default engine and FunASR (torch with CUDA).
ARG EXTRAS=node,funasr
COPY pyproject.toml /src/
# The requirements alone: an edit of the code, or of pyproject.toml that leaves them as they
# are, reuses the dependency layer below.
RUN python3 -c "import sys, tomllib; \
project = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
extras = [name for name in sys.argv[1].split(',') if name]; \
optional = project.get('optional-dependencies', {}); \
print('\n'.join(project['dependencies'] + [r for name in extras for r in optional.get(name, [])]))" \
    "${EXTRAS}" > /requirements.txt

FROM python AS deps
# pip's own variables, for the build stages only (see gateway.Dockerfile).
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

FROM python
ARG VERSION=unknown
LABEL org.opencontainers.image.title="asrgw-node-gpu" \
      org.opencontainers.image.description="asr-billing-gateway inference node (NVIDIA CUDA)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
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
    INFERENCE_DEVICE=cuda:0 \
    HEALTHCHECK_URL=http://127.0.0.1:8001/health/ready
WORKDIR /var/lib/asrgw
USER 10001:10001
EXPOSE 8001
# Large models take minutes to load and warm on first start.
HEALTHCHECK --interval=10s --timeout=5s --start-period=600s --retries=3 \
    CMD ["/opt/asrgw/bin/python", "/opt/asrgw/healthcheck.py"]
ENTRYPOINT ["asrgw"]
CMD ["node"]
