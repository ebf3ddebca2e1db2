# syntax=docker/dockerfile:1
# sketch-search for GPU hosts: the API by default; `python -m index_builder` and `python -m training` in the same
# image (docker-compose.yml runs them as the `indexer` and `train` services). See docs/deploy.md.
#
# The project is installed the way the README installs it (`pip install .` from pyproject.toml, the same pins),
# plus the `gpu` extra. torch==2.14.1 from PyPI is a CUDA 13 build that brings its own CUDA libraries as wheels,
# so the base is NVIDIA's small `base` flavour (libcudart and the driver hooks), not the 2 GB `runtime` flavour
# whose libraries the wheels would duplicate. Needs an NVIDIA driver >= 580 (CUDA 13) on the host.

ARG CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04

# ---- build: a virtualenv with the project and its GPU dependencies ---------------------------------------------
FROM ${CUDA_IMAGE} AS build

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Ubuntu 24.04's Python 3.12 (pyproject: >=3.11,<3.13); not pinned to a patch release, so rebuilds get fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY encoder ./encoder
COPY training ./training
COPY photo_index ./photo_index
COPY index_builder ./index_builder
COPY app ./app

# As the Makefile installs (upgraded pip, then the project from pyproject.toml), not editable, plus the gpu extra.
# faiss-cpu (a base dependency) and faiss-gpu (the `gpu` extra) ship the same `faiss` package: remove the CPU
# wheel, then reinstall the GPU wheel so the files they shared are the GPU build's. `pip check` would now
# report faiss-cpu as missing; that is expected. The last line fails the build if faiss is not the GPU build.
# Versions are pinned by pyproject.toml (DL3013 cannot see that).
# hadolint ignore=DL3013
RUN python -m pip install --upgrade pip \
    && python -m pip install ".[gpu,milvus]" \
    && python -m pip uninstall -y faiss-cpu \
    && python -m pip install --no-deps --force-reinstall \
        "faiss-gpu==$(python -m pip show faiss-gpu | sed -n 's/^Version: //p')" \
    && python -c "import faiss, torch; assert hasattr(faiss, 'StandardGpuResources'), 'faiss is not the GPU build'; print('torch', torch.__version__, 'CUDA', torch.version.cuda, '| faiss', faiss.__version__)"

# ---- final: the virtualenv on the same base, a Python interpreter, no build tools ------------------------------
FROM ${CUDA_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*

# Non-root user; the data folders exist and belong to it, so named volumes mounted there start writable.
ARG UID=10001
RUN groupadd --gid "${UID}" sbir \
    && useradd --uid "${UID}" --gid "${UID}" --create-home --shell /usr/sbin/nologin sbir \
    && mkdir -p /data/index /data/hf /data/checkpoints /data/gallery /data/datasets /data/weights \
    && chown -R sbir:sbir /data

COPY --from=build /opt/venv /opt/venv

# HF_HOME is a volume: weights are fetched once, later starts find them there (also offline, HF_HUB_OFFLINE=1).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/data/hf \
    SBIR_INDEX_DIR=/data/index \
    HOST=0.0.0.0 \
    PORT=8000

USER ${UID}:${UID}
WORKDIR /home/sbir
VOLUME ["/data/hf", "/data/index"]
EXPOSE 8000

# /healthz answers as soon as the process is up (the model and index are /readyz's business).
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]

CMD ["python", "-m", "app"]
