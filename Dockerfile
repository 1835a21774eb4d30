# Hearth, a FHIR R4 server. Build: docker build -t hearth .
# Run (SQLite in the /data volume): docker run -p 8080:8080 -v hearth-data:/data hearth
#   (set HEARTH_BASE_URL to the URL clients use: it is written into Location headers and Bundle links)
# Import:                           docker run -v hearth-data:/data -v "$PWD/in:/in:ro" hearth import /in
# With MongoDB: docker compose up (docker-compose.yml).

# Build the wheel in a throw-away stage, so the image holds the installed package but not the sources.
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HEARTH_PORT=8080 \
    HEARTH_BASE_URL=http://localhost:8080 \
    HEARTH_STORAGE=/data/hearth.db
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /data hearth \
    && mkdir -p /data && chown hearth /data
USER hearth
WORKDIR /data
VOLUME /data
EXPOSE 8080
# slim has no curl: probe with the Python that is there anyway
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HEARTH_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["hearth"]
CMD ["serve", "--host", "0.0.0.0"]
