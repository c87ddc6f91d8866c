# syntax=docker/dockerfile:1
#
# One image for producer, worker and notifier:
#
#   docker build -t servicetags-watch .             # the production image (the last stage)
#   docker run --rm servicetags-watch produce | worker --until-empty | notifier | notifier serve
#
# Stages:
#   builder  venv with the pinned runtime dependencies (docker/requirements.lock) and the
#            project's own wheel; the only stage that runs the build backend
#   runtime  python slim + that venv, non-root, ENTRYPOINT servicetags
#   local    runtime + the `local` extra (docker/requirements-local.lock) and the bundled
#            snapshots: the dev services of docker-compose.yml (ARM endpoint, relay)
#   image    = runtime, last so that `docker build .` (CI's build-push, `az acr build`) makes it
#
# Dependencies are installed from wheels only (--only-binary) with --no-deps from the locks,
# so nothing unpinned gets in and nothing is compiled; `pip check` proves the lock is complete.
# Regenerate the locks with `python docker/lock.py` after changing dependencies.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

# The venv has no pip of its own: the base image's pip installs into it with --python.
RUN python -m venv --without-pip /opt/venv

WORKDIR /src
COPY docker/requirements.lock docker/requirements.lock
RUN pip --python /opt/venv/bin/python install --no-deps --only-binary=:all: \
        --requirement docker/requirements.lock

# The project itself (allow-listed by .dockerignore): a wheel, so the image holds exactly
# what the package declares (the nine packages, runtime/schemas/*.json, web/assets/*), no
# source tree.
COPY pyproject.toml README.md ./
COPY core/ core/
COPY runtime/ runtime/
COPY producer/ producer/
COPY worker/ worker/
COPY notifier/ notifier/
COPY devstack/ devstack/
COPY servicetags/ servicetags/
COPY impact/ impact/
COPY web/ web/
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && pip --python /opt/venv/bin/python install --no-deps /wheels/*.whl \
    && pip --python /opt/venv/bin/python check

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="servicetags-watch" \
      org.opencontainers.image.description="Watches Azure service tags per region and reports exactly which IP ranges were added and removed." \
      org.opencontainers.image.licenses="MIT"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# A fixed numeric uid/gid, so orchestrators can check runAsNonRoot. /state/* exist (owned by
# that user) so that named volumes mounted there start out writable by it.
RUN groupadd --system --gid 10001 servicetags \
    && useradd --system --uid 10001 --gid servicetags --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin servicetags \
    && mkdir -p /app /state/arm /state/relay /state/relay-runs \
    && chown servicetags:servicetags /app /state /state/arm /state/relay /state/relay-runs

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001

ENTRYPOINT ["servicetags"]
CMD ["--help"]

# ---------------------------------------------------------------------------------------
# Dev services only (docker-compose.yml's arm-endpoint and relays); never deployed.
FROM runtime AS local

USER root
COPY docker/requirements-local.lock /tmp/requirements-local.lock
RUN pip --python /opt/venv/bin/python install --no-deps --only-binary=:all: \
        --requirement /tmp/requirements-local.lock \
    && pip --python /opt/venv/bin/python check \
    && rm /tmp/requirements-local.lock
# The real snapshots the local ARM endpoint serves (read-only, so owned by root).
COPY data/snapshots/ /app/data/snapshots/
USER 10001:10001

# ---------------------------------------------------------------------------------------
# The default target: the production image (runtime, without the dev additions above).
FROM runtime AS image
