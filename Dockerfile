# async-gateway as a container sidecar: a slim image, a non-root user, the database on a volume.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
COPY config /etc/async-gateway
RUN useradd --system --uid 10001 --home-dir /data --create-home gateway
USER 10001
WORKDIR /data
VOLUME ["/data"]
# The operator console stays off until GATEWAY_ADMIN_PORT is set (with GATEWAY_ADMIN_TOKEN).
ENV GATEWAY_CONFIG=/etc/async-gateway/sidecar.yaml \
    GATEWAY_DB=/data/gateway.db \
    GATEWAY_ADMIN_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('GATEWAY_PORT', '8080') + '/_gateway/healthz', timeout=2)"]
ENTRYPOINT ["async-gateway"]
CMD ["serve"]
