# parkwatch collector image. Not built or run in this project's CI (no Docker engine there);
# see the README's "What is tested against real servers".
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
# Every package of pyproject.toml's wheel (tests/test_compose.py keeps the two in step).
COPY parkwatch ./parkwatch
COPY collector ./collector
COPY kpi ./kpi
COPY rules ./rules
COPY notify ./notify
COPY dashboards ./dashboards
COPY simulators ./simulators
RUN pip install --no-cache-dir .
RUN useradd --system parkwatch && mkdir -p /var/lib/parkwatch && chown parkwatch /var/lib/parkwatch
USER parkwatch
# /healthz and /metrics listen on every interface so the orchestrator can probe them; they show
# URLs only redacted (user:***@) and never a secret (tests/parkwatch/test_secrets_never_shown.py).
# Give secrets as environment variables or a mounted config file, never baked into the image.
ENV PARKWATCH_SPOOL__DIRECTORY=/var/lib/parkwatch/spool \
    PARKWATCH_DEADLETTER__PATH=/var/lib/parkwatch/deadletter.jsonl \
    PARKWATCH_MQTT__RETAINED_STATE_FILE=/var/lib/parkwatch/retained-seen.bin \
    PARKWATCH_STATE__DIRECTORY=/var/lib/parkwatch/state \
    PARKWATCH_HTTP__HOST=0.0.0.0
EXPOSE 9108
ENTRYPOINT ["parkwatch"]
CMD ["run"]
