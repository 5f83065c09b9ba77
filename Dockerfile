# One image for the worker, the producer and migrations; the command picks the role:
#   headrace worker  |  headrace produce s3://bucket/key --table T  |  headrace migrate
# Build and push: deploy/README.md. Checked by hadolint and checkov (tests/deploy/test_image.py,
# which also replays the build stage's install and runs the result as a non-root user).
# --- build: the wheel, installed with every version pinned, into /opt/headrace ---------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY headrace ./headrace
COPY producer ./producer
COPY worker ./worker
COPY cli ./cli
COPY migrations ./migrations
# Only the runtime dependencies: no dev extra (linters, pytest) and no demo extra (moto, its
# Flask server, aiosqlite). -c pins every package, --build-constraint the build backend.
RUN python -m venv /opt/headrace \
    && /opt/headrace/bin/pip install -c constraints.txt pip setuptools wheel \
    && /opt/headrace/bin/pip wheel --no-deps -c constraints.txt --build-constraint constraints.txt \
        --wheel-dir /tmp/wheels . \
    && /opt/headrace/bin/pip install -c constraints.txt /tmp/wheels/headrace-*.whl \
    && /opt/headrace/bin/python -m compileall -q /opt/headrace/lib
# The RDS CA bundle for HEADRACE_DB__TLS_MODE=verify-identity. The default downloads AWS's
# global bundle at build time; without network, download it beforehand
#   curl -fsSo rds-ca.pem https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
# and build with --build-arg RDS_CA_BUNDLE=rds-ca.pem (a file in the build context).
ARG RDS_CA_BUNDLE=https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
# ADD, not COPY: the default source is a URL (the slim image has no curl); a local file
# works too. The RUN below refuses anything that is not a PEM bundle.
# checkov:skip=CKV_DOCKER_4: ADD fetches the RDS CA bundle URL (or copies the offline file)
# hadolint ignore=DL3020
ADD ${RDS_CA_BUNDLE} /tmp/rds-ca.pem
RUN grep -q "BEGIN CERTIFICATE" /tmp/rds-ca.pem \
    && install -D -m 0644 /tmp/rds-ca.pem /out/etc/headrace/rds-ca.pem

# --- final: the venv, the CA bundle, a non-root user; no compiler, no pip cache -------------
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 headrace \
    && useradd --system --uid 10001 --gid headrace --no-create-home --shell /usr/sbin/nologin headrace
COPY --from=build /opt/headrace /opt/headrace
COPY --from=build /out/etc/headrace /etc/headrace
# Read-only root filesystem: bytecode is compiled at build time and never written; nothing
# else writes outside /tmp (ECS mounts a writable /tmp volume, see the task definitions).
ENV PATH=/opt/headrace/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TMPDIR=/tmp \
    HEADRACE_METRICS__PORT=9400
WORKDIR /tmp
USER 10001:10001
# /metrics, /healthz, /readyz (README "Operating"); the check needs no curl.
EXPOSE 9400
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["headrace", "health"]
# PID 1: the worker and the producer install their own SIGTERM handlers, so a signal reaches
# them as PID 1; the init that forwards signals and reaps is the runtime's (ECS task
# definitions set initProcessEnabled, `docker run --init` locally), not a package here.
ENTRYPOINT ["headrace"]
CMD ["worker"]
