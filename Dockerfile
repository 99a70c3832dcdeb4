# Image of the debtor-segments service: `worker` by default, and every other
# `debtor-segments` subcommand (simulate, publish, ...) through CMD.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY pyproject.toml README.md LICENSE ./
COPY streams/ streams/
COPY agents/ agents/
COPY schemas/ schemas/
RUN pip install --no-cache-dir .
# Treatment policies: `worker --policy /app/policies/default.yaml` (or mount your own).
COPY policies/ policies/

# /data holds the RocksDB table state; created here and owned by the service
# user so that a fresh named volume mounted on it inherits that ownership.
RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app \
    && mkdir /data \
    && chown app:app /data
USER app

# Faust web server: /metrics and the service's HTTP API.
EXPOSE 6066

ENTRYPOINT ["debtor-segments"]
CMD ["worker"]
