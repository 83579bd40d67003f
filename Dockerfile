# streamgate app instance. Built by docker-compose.sentinel.yml; configured
# entirely through environment variables (see the shared protocol page).

# Build a wheel from the source tree, so the runtime image holds the installed
# package only (no tests, no source checkout shadowing site-packages).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=8000
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home streamgate
# An empty working directory: nothing there shadows the installed package.
WORKDIR /srv
USER streamgate
EXPOSE 8000
# /healthz answers while the process runs; readiness (/readyz) is for the
# load balancer, not for restarting the container.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2)"]
# SIGTERM (docker stop) makes an instance drain: it closes sockets with 1012
# and exits within 10 s; compose gives it 15 s before SIGKILL.
CMD ["python", "-m", "app"]
