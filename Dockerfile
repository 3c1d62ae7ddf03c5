# The chatlog projector worker (and the chatlog CLI).
#   docker build -t chatlog .
#   docker run --rm -e KAFKA_BOOTSTRAP_SERVERS=... -e REDIS_URL=... -p 127.0.0.1:9100:9100 chatlog
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The card folders install as chatlog.schemas, chatlog.producers, ... (see
# pyproject's package-dir), so all of them are needed to build the wheel.
COPY pyproject.toml README.md ./
COPY chatlog ./chatlog
COPY schemas ./schemas
COPY producers ./producers
COPY projector ./projector
COPY histories ./histories
COPY benchmarks ./benchmarks
RUN pip install ".[metrics]" \
    && useradd --system --uid 10001 --no-create-home chatlog
USER chatlog

# The metrics server binds every interface of the container (chatlog's own
# default is loopback): which of the host's interfaces reach it is decided
# where the port is published (-p 127.0.0.1:9100:9100) or by network policy.
ENV CHATLOG_METRICS_PORT=9100 \
    CHATLOG_METRICS_HOST=0.0.0.0 \
    CHATLOG_LOG_FORMAT=json
EXPOSE 9100

# Liveness: the worker's loop is iterating (see "Operating the projector" in README.md).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CHATLOG_METRICS_PORT', '9100'), timeout=4)"]

# SIGTERM (docker stop) finishes the batch in hand, commits and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["chatlog"]
CMD ["projector", "run"]
