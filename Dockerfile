# syntax=docker/dockerfile:1

# --- build: turn the source into a wheel and install it, with its dependencies, into a venv
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# pyproject.toml names README.md as the package's readme, so the build needs it.
COPY pyproject.toml README.md ./
COPY src ./src

RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/powerpulse \
 && /opt/powerpulse/bin/pip install /wheels/powerpulse-*.whl \
 && /opt/powerpulse/bin/python -c "import ijson; assert ijson.backend == 'yajl2_c', ijson.backend" \
 && /opt/powerpulse/bin/python -c "from importlib import resources; assert (resources.files('powerpulse') / 'data' / 'demo_export.json').is_file(), 'demo export missing from the wheel'"

# --- runtime: the venv only, no source, no build tools
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/powerpulse/bin:$PATH \
    DATABASE_URL=sqlite:////data/powerpulse.db

RUN groupadd --system --gid 10001 powerpulse \
 && useradd --system --uid 10001 --gid powerpulse --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin powerpulse \
 && mkdir -p /data \
 && chown powerpulse:powerpulse /data

COPY --from=build /opt/powerpulse /opt/powerpulse

USER powerpulse
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=3)"]

ENTRYPOINT ["powerpulse"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
