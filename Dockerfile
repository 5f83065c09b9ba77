# One image for both containers: `headrace worker` (default) or `headrace produce ...`.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md alembic.ini ./
COPY headrace ./headrace
COPY producer ./producer
COPY worker ./worker
COPY migrations ./migrations
RUN python -m venv /opt/headrace \
    && /opt/headrace/bin/pip install --no-compile . \
    && /opt/headrace/bin/python -m compileall -q /opt/headrace/lib

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 headrace \
    && useradd --system --uid 10001 --gid headrace --no-create-home --shell /usr/sbin/nologin headrace
COPY --from=build /opt/headrace /opt/headrace
ENV PATH=/opt/headrace/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HEADRACE_METRICS__PORT=9400
USER headrace
# /metrics, /healthz, /readyz (README "Operating"); the check needs no curl.
EXPOSE 9400
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["headrace", "health"]
ENTRYPOINT ["headrace"]
CMD ["worker"]
