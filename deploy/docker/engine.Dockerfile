# syntax=docker/dockerfile:1
# The engine image: the Faust worker (`python -m streams worker`), the head-tag refresher, the CLI (the teacher's
# job, the catalog import) and Triton on CPU (`qu triton serve`: the tritonserver binary and its Python backend come
# with the nvidia-pytriton wheel, and the student's model.py imports the engine, so one image serves both).
#
#   docker build -f deploy/docker/engine.Dockerfile -t ghcr.io/qu-engine/qu-engine:0.1.0 .
#
# Built from the repository root (.dockerignore keeps local state, venvs and caches out of the context).
# Nothing secret is baked in: keys and passwords come from the pod's environment (deploy/k8s).
ARG PYTHON_IMAGE=docker.io/library/python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
# torch first, from the CPU index: an unpinned resolver run would pull a multi-GB CUDA build (as in the Makefile).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
WORKDIR /app
COPY pyproject.toml README.md NOTICE ./
COPY protos ./protos
COPY services ./services
COPY streams ./streams
COPY triton_models ./triton_models
# Editable, on purpose: the engine finds triton_models/ and its shipped data beside its sources.
RUN pip install -e .
# Triton's Python-backend stub for this Python, placed beside the backend now: the pods' root filesystem is
# read-only, and `qu triton serve` would otherwise place it at start.
RUN python -c "from services.stack.triton_server import pytriton_server_dir, prepare_python_backend as p; p(pytriton_server_dir())"
RUN python -m compileall -q /app/services /app/streams /app/protos

FROM ${PYTHON_IMAGE} AS engine
RUN groupadd --gid 10001 qu \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/qu --no-create-home --shell /usr/sbin/nologin qu
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    QU_STATE_DIR=/var/lib/qu
WORKDIR /app
USER 10001:10001
# 9464: /metrics, /livez, /readyz of the worker and the refresher; 8000-8002: Triton's HTTP, gRPC and metrics.
EXPOSE 9464 8000 8001 8002
ENTRYPOINT ["qu"]
CMD ["--help"]
