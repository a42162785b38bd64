# candlewax image: the flow, its CLI and pinned dependencies; runs as a non-root user on a
# read-only root filesystem (the manifests mount /tmp, the lake and recovery volumes).
# Build: docker build -t candlewax:0.1.0 .
FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY candlewax ./candlewax
COPY config ./config
COPY flows ./flows
COPY operators ./operators
COPY sources ./sources
COPY sinks ./sinks
COPY tools ./tools
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint constraints.txt .

FROM python:3.11.7-slim-bookworm
RUN groupadd --gid 10001 candlewax \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin candlewax
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels candlewax && rm -rf /wheels
# Like Bytewax's own image: the start scripts in /bytewax, the working directory; the
# chart and waxctl mount the dataflow file's directory at /var/bytewax (it must not hide them).
COPY k8s/helm/entrypoint.sh k8s/helm/entrypoint-recovery.sh k8s/helm/dataflow.py /bytewax/
WORKDIR /bytewax
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 CANDLEWAX_LAKE_DIR=/var/lake
USER 10001:10001
EXPOSE 9999 9464
CMD ["python", "-m", "bytewax.run", "flows.ohlcv"]
