# syntax=docker/dockerfile:1
# Every mailstack image, from the repository root (the build context); one final stage an image:
#   gateway    mailstack_gateway, the REST API that accepts emails (and the migration image)
#   processor  mailstack_processor, the SQS consumer that delivers emails
#   stubs      mailstack_stubs, ElasticEmail v4 or SendGrid v3 by argument (and the dev issuer)
# The target picks the final stage; PACKAGE and SOURCE_DIR pick what the shared build installs:
#   docker build --target gateway \
#     --build-arg PACKAGE=mailstack-gateway --build-arg SOURCE_DIR=services/gateway \
#     -t mailstack-gateway .
#   (processor: mailstack-processor, services/processor; stubs: mailstack-stubs, tools/stubs)
# Each runs as 10001:10001 with a read-only root filesystem and a writable /tmp, as on ECS.
# ECS runs them on the architecture its task definitions name (X86_64 by default): build with
# `--platform linux/amd64` on any other machine (docs/deploy.md).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# Build: the package's virtual environment in /app/.venv.
FROM ${PYTHON_IMAGE} AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
RUN pip install --no-cache-dir uv==0.13.8
WORKDIR /src
# The lock and every workspace member's metadata (uv needs all of them to read the workspace),
# but no source yet: this layer is rebuilt only when a dependency changes.
COPY pyproject.toml uv.lock ./
COPY libs/core/pyproject.toml libs/core/
COPY services/gateway/pyproject.toml services/gateway/
COPY services/processor/pyproject.toml services/processor/
COPY services/jobs/pyproject.toml services/jobs/
COPY tools/stubs/pyproject.toml tools/stubs/
COPY tools/stack/pyproject.toml tools/stack/
COPY tools/testing/pyproject.toml tools/testing/
COPY tools/bench/pyproject.toml tools/bench/
COPY tools/cli/pyproject.toml tools/cli/
COPY infra/pyproject.toml infra/
# Declared after the shared layers above, so the three images share them. No defaults: a build
# without them stops here instead of making an image with the wrong package.
ARG PACKAGE
ARG SOURCE_DIR
RUN --mount=type=cache,target=/root/.cache/uv \
    : "${PACKAGE:?set --build-arg PACKAGE}" "${SOURCE_DIR:?set --build-arg SOURCE_DIR}" \
    && uv sync --frozen --no-dev --no-install-workspace --package "${PACKAGE}"
# libs/core is the shared library; a package that does not depend on it (mailstack-stubs) does
# not get it installed: --package installs that package's dependencies only.
COPY libs/core libs/core
COPY ${SOURCE_DIR} ${SOURCE_DIR}
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "${PACKAGE}"

# The CA certificates libpq verifies the database with on AWS (the task definitions set
# PGSSLROOTCERT to it): the system's, whose Amazon roots sign RDS Proxy's certificate, and the
# RDS global bundle, which signs the instances' (the migration task and the replica reads
# connect to them directly). Fetched at build time from AWS's trust store.
FROM ${PYTHON_IMAGE} AS database-ca
ADD https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem /tmp/rds-global-bundle.pem
RUN cat /etc/ssl/certs/ca-certificates.crt /tmp/rds-global-bundle.pem > /mailstack-database-ca.pem

# Runtime: what every image shares, the virtual environment included.
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 mailstack \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin mailstack
COPY --from=build /app/.venv /app/.venv
# Nothing is written outside /tmp: no bytecode at run time (it was compiled at build time).
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
WORKDIR /tmp
USER 10001:10001

FROM runtime AS gateway
COPY --from=database-ca /mailstack-database-ca.pem /etc/ssl/certs/mailstack-database-ca.pem
ENV GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=4s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]
# Also the migration image: `docker run ... mailstack-gateway python -m mailstack_core.migrate`.
CMD ["python", "-m", "mailstack_gateway"]

FROM runtime AS processor
COPY --from=database-ca /mailstack-database-ca.pem /etc/ssl/certs/mailstack-database-ca.pem
ENV PROCESSOR_HEALTH_PORT=9101
EXPOSE 9101
HEALTHCHECK --interval=10s --timeout=4s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:9101/healthz', timeout=3)"]
CMD ["python", "-m", "mailstack_processor"]

FROM runtime AS stubs
EXPOSE 8101 8102
HEALTHCHECK --interval=10s --timeout=4s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u\ndef ok(url):\n    try:\n        return u.urlopen(url, timeout=3).status == 200\n    except OSError:\n        return False\nsys.exit(0 if any(ok(url) for url in ['http://127.0.0.1:8101/_stub/health', 'http://127.0.0.1:8102/_stub/health']) else 1)"]
# e.g. `docker run mailstack-stubs sendgrid --host 0.0.0.0 --port 8102 --api-key KEY`
ENTRYPOINT ["python", "-m", "mailstack_stubs"]
CMD ["elasticemail", "--host", "0.0.0.0", "--port", "8101", "--api-key", "local-elasticemail-key"]
