# One image, three entry points: kaizen-operator, kaizen-api, kaizen-gateway
# (console scripts on PATH; the Helm chart and the operator's gateway Deployments
# name them as the container command).
#
# Base: Debian 12 "bookworm" slim with CPython 3.11.7, the version the project is
# developed and tested with. Pin it by digest in your registry mirror for builds you
# need to reproduce bit for bit (`python:3.11.7-slim-bookworm@sha256:...`).

# The web console (console/): built from its lockfile; the facade serves the files at /.
FROM node:20.19.5-bookworm-slim AS console
WORKDIR /src/console
COPY console/package.json console/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY console/ ./
RUN npm run build

FROM python:3.11.7-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api ./api
COPY operator ./operator
COPY gateway ./gateway
# A virtualenv copied whole into the runtime stage: no compiler or pip cache there.
RUN python -m venv /opt/kaizen \
    && /opt/kaizen/bin/pip install ".[operator,gateway,api]"

FROM python:3.11.7-slim-bookworm
LABEL org.opencontainers.image.title="kaizen-studio" \
      org.opencontainers.image.description="Kaizen Studio: operator, REST facade and agent gateway" \
      org.opencontainers.image.source="https://github.com/kaizen-studio/kaizen-studio" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 65532 kaizen \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin kaizen
COPY --from=build /opt/kaizen /opt/kaizen
COPY --from=console /src/console/dist /opt/kaizen/console
ENV PATH=/opt/kaizen/bin:$PATH \
    KAIZEN_CONSOLE_DIR=/opt/kaizen/console \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Non-root; the root filesystem can be read-only (nothing is written outside /tmp).
USER 65532:65532
WORKDIR /tmp
# gateway 8080, facade 8000, operator webhook/metrics API 9443, operator metrics 9090
EXPOSE 8080 8000 9443 9090
CMD ["kaizen-gateway", "--help"]
