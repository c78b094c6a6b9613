# The bot's image: Python 3.11, the package, and the real helm binary (HELM_BIN=helm).
FROM python:3.11-slim AS base
ARG HELM_VERSION=v4.1.4
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && curl -fsSL "https://get.helm.sh/helm-${HELM_VERSION}-linux-amd64.tar.gz" | tar -xz -C /tmp \
    && mv /tmp/linux-amd64/helm /usr/local/bin/helm && rm -rf /tmp/linux-amd64 \
    && apt-get purge -y curl && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY state ./state
COPY sandbox ./sandbox
RUN pip install --no-cache-dir .
USER 10001
EXPOSE 3000
ENTRYPOINT ["milvus-pulsar-upgrade-bot"]
CMD ["serve"]
