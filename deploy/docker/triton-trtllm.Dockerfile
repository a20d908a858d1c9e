# syntax=docker/dockerfile:1
# The GPU student's Triton: NVIDIA's Triton image with the TensorRT-LLM backend, the qu_student_trtllm templates,
# the engine's Python package (its pre/post-processing models import it) and the deploy/gpu scripts that build the
# engine on the pod's GPU and fill the repository (deploy/gpu/prepare_repository.sh, run by the pod's init
# container: an engine is built per GPU model, which a build machine without that GPU cannot do).
#
#   docker build -f deploy/docker/triton-trtllm.Dockerfile -t ghcr.io/qu-engine/qu-triton-trtllm:0.1.0 .
#
# TRITON_IMAGE and TRTLLM_TAG go together: the TensorRT-LLM release inside that Triton image, whose example
# converters deploy/gpu/convert_checkpoint.sh runs (docs/gpu-student.md).
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.12-trtllm-python-py3
ARG GIT_IMAGE=docker.io/alpine/git:v2.47.1
ARG TRTLLM_TAG=v0.16.0

FROM ${GIT_IMAGE} AS trtllm-examples
ARG TRTLLM_TAG
RUN git clone --depth 1 --branch ${TRTLLM_TAG} https://github.com/NVIDIA/TensorRT-LLM.git /src \
    && mkdir /out && mv /src/examples /out/examples

FROM ${TRITON_IMAGE} AS serve
COPY --from=trtllm-examples /out/examples /opt/tensorrt_llm/examples
WORKDIR /opt/qu
COPY pyproject.toml README.md NOTICE ./
COPY protos ./protos
COPY services ./services
COPY streams ./streams
COPY triton_models ./triton_models
COPY deploy/gpu ./deploy/gpu
# --no-deps: the Python models need only numpy, orjson and transformers' tokenizer at serve time, and the image's
# own Python packages (torch, tensorrt_llm) must not be replaced (docs/gpu-student.md).
RUN pip install --no-cache-dir --no-deps -e /opt/qu && pip install --no-cache-dir orjson==3.10.12
RUN groupadd --gid 10001 qu \
    && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin qu
USER 10001:10001
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver"]
