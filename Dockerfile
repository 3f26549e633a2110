# syntax=docker/dockerfile:1
# One image for every pipeline step (and the CLI): `cfxray <step> ...`.
#   CPU (default):  docker build -t cfxray:0.1.0 .
#   CUDA:           docker build --build-arg VARIANT=cuda -t cfxray:0.1.0-cuda .
# The CUDA variant runs on any node with an NVIDIA driver (the CUDA runtime comes with the
# locked torch wheel). Record the commit for lineage: --build-arg GIT_COMMIT=$(git rev-parse HEAD)
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS builder
ARG VARIANT=cpu
# Where the CPU variant gets torch/torchvision (PyTorch's CPU-only wheel index).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /build
COPY requirements.lock ./
COPY image-build/lock-for-variant.sh ./image-build/
RUN sh image-build/lock-for-variant.sh "$VARIANT" < requirements.lock > requirements.variant.txt \
 && if [ "$VARIANT" = "cpu" ]; then \
      pip install --index-url "$TORCH_INDEX_URL" \
        "$(grep '^torch==' requirements.lock)" "$(grep '^torchvision==' requirements.lock)"; \
    fi \
 && pip install -r requirements.variant.txt
# dvc.yaml: the package carries it (src/cfxray/pipeline/dvc_stages.yaml links to it), so the
# pipeline's steps read their params.yaml sections from the stages.
COPY pyproject.toml README.md dvc.yaml ./
COPY src ./src
RUN pip install --no-deps . \
 && python -c "import cfxray.cli, torch, kfp, dvc; from cfxray.pipeline.steps import step_sections; step_sections(); print('cfxray', cfxray.__version__, 'torch', torch.__version__)"

FROM python:${PYTHON_VERSION}-slim AS runtime
ARG VARIANT=cpu
ARG IMAGE_NAME=cfxray:0.1.0
ARG GIT_COMMIT=""
LABEL org.opencontainers.image.title="cfxray" \
      org.opencontainers.image.description="Counterfactual explanations of chest X-ray classifiers" \
      org.opencontainers.image.revision="${GIT_COMMIT}"
# git: DVC reads datasets from git URLs and lineage records the commit.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 --user-group cfxray
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# The default parameters; a pipeline run passes its own params to every step.
COPY params.yaml ./
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/home/cfxray \
    CFXRAY_IMAGE=${IMAGE_NAME} \
    CFXRAY_IMAGE_VARIANT=${VARIANT} \
    CFXRAY_GIT_COMMIT=${GIT_COMMIT}
# Numeric, so Kubernetes can verify runAsNonRoot.
USER 1000:1000
ENTRYPOINT ["cfxray"]
CMD ["--help"]
