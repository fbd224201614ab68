# syntax=docker/dockerfile:1
# The template's production image: gunicorn + eventlet (or gevent) workers serving
# Flask and Socket.IO on one port. Build: docker build -t realtime-template .

ARG PYTHON_VERSION=3.11
# eventlet (gunicorn 25.x) or gevent (on the newest gunicorn): docs/deployment.md
ARG PROFILE=eventlet

# --- build stage: install the pinned dependencies into a virtualenv ------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG PROFILE
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# gevent and greenlet ship wheels for this platform: no compiler is needed here, and
# nothing from this stage but /opt/venv reaches the final image.
RUN python -m venv /opt/venv
COPY requirements.txt requirements-gevent.txt /tmp/
RUN /opt/venv/bin/pip install --requirement /tmp/requirements.txt \
    && if [ "$PROFILE" = gevent ]; then \
        /opt/venv/bin/pip install --requirement /tmp/requirements-gevent.txt; fi

# --- runtime stage: the virtualenv, the code, a non-root user ---------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG PROFILE
# PYTHONUNBUFFERED: log lines reach `docker logs` at once. APP_ENV=production makes the
# app refuse to start without real secrets (see .env.example); BIND listens on all
# interfaces inside the container (only the proxy publishes a port).
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APP_ENV=production \
    BIND=0.0.0.0:5000 \
    ASYNC_MODE=${PROFILE}
RUN groupadd --gid 10001 app && useradd --no-log-init --create-home --uid 10001 --gid 10001 app
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --chown=app:app wsgi.py ./
COPY --chown=app:app config/ config/
COPY --chown=app:app app/ app/
USER 10001:10001
EXPOSE 5000
# Liveness only (no Redis check): a Redis outage must not get every app container
# restarted; /api/ready is the readiness signal for a load balancer.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/api/health', timeout=2)"]
# The same config file as every other deployment: settings come from the environment.
CMD ["gunicorn", "-c", "config/gunicorn.conf.py"]
