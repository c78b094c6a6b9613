# syntax=docker/dockerfile:1
# The bot's image: Python 3.11, the bot's wheel and its dependencies, and the real helm binary
# (HELM_BIN=helm). Build: docker build -t <registry>/milvus-pulsar-upgrade-bot:0.1.0 .
#
# Both stages start from the same Python image, pinned by version tag. Pinning by digest as well
# (python:3.11.14-slim-bookworm@sha256:<digest>, read with `docker buildx imagetools inspect`) is
# recommended: a tag can be re-pushed, a digest cannot.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- builder: helm, checked against its published sha256, and the wheels -------------------
FROM ${PYTHON_IMAGE} AS builder
ARG HELM_VERSION=v4.1.4
# The sha256 published with the release for helm-v4.1.4-linux-amd64.tar.gz (release notes of
# github.com/helm/helm v4.1.4, and get.helm.sh/helm-v4.1.4-linux-amd64.tar.gz.sha256sum). Change
# HELM_VERSION and HELM_SHA256 together; a mismatch fails the build.
ARG HELM_SHA256=70b2c30a19da4db264dfd68c8a3664e05093a361cefd89572ffb36f8abfa3d09
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /build
RUN curl -fsSLo helm.tar.gz "https://get.helm.sh/helm-${HELM_VERSION}-linux-amd64.tar.gz" \
    && echo "${HELM_SHA256}  helm.tar.gz" | sha256sum -c - \
    && tar -xzf helm.tar.gz linux-amd64/helm \
    && install -D -m 0755 linux-amd64/helm /out/helm \
    && /out/helm version --short
# Only what the wheel is made of (.dockerignore keeps everything else out of the context). The
# sandbox (simulators for the tests and `./dev demo`) is not copied: `serve` never imports it, and
# `demo` cannot run in this image anyway (it needs redis-server, the pinned helm/kubectl binaries
# of .tools/ and the vendored Milvus charts), so the image is for `serve` only.
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY state ./state
# The bot's wheel and a wheel of every dependency, so that the runtime stage needs no compiler
# and no network.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime: no compiler, no curl, no sources; only the wheels installed ------------------
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HELM_BIN=/usr/local/bin/helm
COPY --from=builder /out/helm /usr/local/bin/helm
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels milvus-pulsar-upgrade-bot \
    && groupadd --gid 10001 bot \
    && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin bot
# Non-root; the chart runs it with a read-only root filesystem and an emptyDir at /tmp (helm's
# cache, config and data, temp files).
USER 10001:10001
WORKDIR /tmp
EXPOSE 3000
ENTRYPOINT ["milvus-pulsar-upgrade-bot"]
CMD ["serve"]
