# syntax=docker/dockerfile:1
#
# pusher-compat: a Pusher Channels protocol server, as a small non-root image.
#
#   docker build -t pusher-compat .
#   docker run --rm -p 6001:6001 \
#     -e PUSHER_APP_ID=1001 -e PUSHER_APP_KEY=app-key -e PUSHER_APP_SECRET=app-secret \
#     pusher-compat
#
# Configuration
#   Environment (one app, the names a Laravel .env already has; used when the config file
#   has no [[apps]], as the image's default file does not):
#     PUSHER_APP_ID       app id      (default app-id; the Python SDK wants a numeric one)
#     PUSHER_APP_KEY      app key     (default app-key)
#     PUSHER_APP_SECRET   app secret  (default app-secret: set your own)
#   Mounted file (several apps, webhooks, limits, [auth]): mount a TOML file over
#     /etc/pusher-compat/pusher-compat.toml, e.g.
#     -v "$PWD/pusher-compat.toml:/etc/pusher-compat/pusher-compat.toml:ro"
#   Arguments after the image name replace CMD and go to `pusher-compat serve`, e.g.
#     pusher-compat --config /etc/pusher-compat/pusher-compat.toml --log-level debug
#
# Stopping: SIGTERM makes the server stop accepting, report not-ready on /ready, close every
# socket with 4200 (clients reconnect at once) and exit 0. Give it time to drain:
# `docker stop -t 30`, compose `stop_grace_period: 30s`, k8s terminationGracePeriodSeconds.
#
# Nothing is built here but `pip install .`: every dependency ships wheels for this base.

# ---- build: install the project and its dependencies into a virtualenv -----------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY protocol/ protocol/
COPY pusher_compat/ pusher_compat/
RUN python -m venv /opt/venv && /opt/venv/bin/pip install .

# ---- runtime: the virtualenv, a config file and an unprivileged user --------------------
FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="pusher-compat" \
      org.opencontainers.image.description="Self-hosted server for the Pusher Channels protocol" \
      org.opencontainers.image.licenses="MIT"

RUN groupadd --system --gid 10001 pusher \
 && useradd --system --uid 10001 --gid pusher --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin pusher

COPY --from=build /opt/venv /opt/venv
COPY deploy/docker/pusher-compat.toml /etc/pusher-compat/pusher-compat.toml

ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001
WORKDIR /tmp
EXPOSE 6001

# Liveness: GET /up answers 200 while the process serves HTTP. (No curl in a slim image:
# Python's urllib does it. With TLS on, or another port, adjust the URL.)
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:6001/up', timeout=2).status != 200)"]

STOPSIGNAL SIGTERM
# Exec form: pusher-compat is PID 1 and receives SIGTERM itself.
ENTRYPOINT ["pusher-compat", "serve"]
CMD ["--config", "/etc/pusher-compat/pusher-compat.toml"]
