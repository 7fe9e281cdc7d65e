# Herald: bridge and worker image (`herald run`, `herald bridge` or `herald worker`).
# Postee's layout is kept: /server/rego-templates/custom, /server/rego-filters, /config/cfg.yaml, uid 1099.
#
#   podman build --format docker -t herald .        (or: docker build -t herald .; make image)
#
# The image runs as uid/gid 1099 (numeric, no root step at run time) and needs no writable root
# file system: run it with --read-only (Kubernetes: readOnlyRootFilesystem) and a tmpfs on /tmp
# (and on herald.spool.dir, when the bridge spools). PYTHON_IMAGE must name a Python 3.11+ image
# by digest; scripts/build-image.sh builds a local Debian base where no registry is reachable.
# The default digest is python:3.11-slim-bookworm's multi-arch index; refresh it with
# `skopeo inspect docker://docker.io/library/python:3.11-slim-bookworm` (its "Digest").
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

# --- build: a virtual environment in /opt/herald ------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
# scripts/build-image.sh mounts a directory of the dependencies' wheels (.cache/image/wheels) and
# sets these; a plain build leaves them unset and pip uses the package index and its cache mount
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/herald
WORKDIR /src
# The dependencies first, from pyproject.toml alone: this layer is reused until it changes.
# The pip cache is a build cache mount, kept between builds.
COPY pyproject.toml ./
RUN --mount=type=cache,id=herald-pip,target=/root/.cache/pip \
    /opt/herald/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" >requirements.txt \
 && /opt/herald/bin/pip install --quiet -r requirements.txt "setuptools==80.9.0" "wheel==0.45.1"
COPY README.md ./
COPY app ./app
COPY agents ./agents
COPY actions ./actions
RUN --mount=type=cache,id=herald-pip,target=/root/.cache/pip \
    /opt/herald/bin/pip install --quiet --no-deps --no-build-isolation . \
 && /opt/herald/bin/pip uninstall --quiet --yes setuptools wheel \
 && /opt/herald/bin/herald --help >/dev/null

# --- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
# a numeric user with a passwd entry (no useradd needed in the base): uid/gid 1099 like Postee's
RUN echo 'herald:x:1099:1099:Herald:/server:/usr/sbin/nologin' >>/etc/passwd \
 && echo 'herald:x:1099:' >>/etc/group \
 && mkdir -p /server/rego-templates/custom /server/rego-filters /config /var/spool/herald \
 && chown 1099:1099 /var/spool/herald
COPY --from=build /opt/herald /opt/herald
WORKDIR /server
USER 1099:1099
ENV PATH=/opt/herald/bin:$PATH \
    HOME=/server \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    POSTEE_CFG=/config/cfg.yaml \
    POSTEE_HTTP=0.0.0.0:8082 \
    REGO_FILTERS_PATH=/server/rego-filters \
    HERALD_TEMPLATE_DIRS=/server/rego-templates/custom \
    HERALD_SPOOL_DIR=/var/spool/herald
# 8082: the bridge (events, /healthz, /readyz, /metrics); 8083: the worker's admin listener
# (herald.admin-listen, env HERALD_ADMIN_LISTEN; 127.0.0.1 unless set, e.g. 0.0.0.0:8083 in a pod)
EXPOSE 8082 8083
# GET /healthz of the bridge (POSTEE_HTTP) or, in a `herald worker` container, of the worker's
# admin listener (HERALD_ADMIN_LISTEN); a wildcard host is asked on 127.0.0.1. Python only: no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/herald/bin/python", "-c", "import os, urllib.request\nargs = open('/proc/1/cmdline', 'rb').read().split(b'\\0')\nworker = b'worker' in args and b'bridge' not in args and b'run' not in args\naddr = os.environ.get('HERALD_ADMIN_LISTEN', '127.0.0.1:8083') if worker else os.environ.get('POSTEE_HTTP', '127.0.0.1:8082')\nhost, _, port = addr.rpartition(':')\nhost = host.strip('[]')\nhost = '127.0.0.1' if host in ('', '0.0.0.0', '::') else host\nhost = f'[{host}]' if ':' in host else host\nurllib.request.urlopen(f'http://{host}:{port}/healthz', timeout=4)"]
ENTRYPOINT ["herald"]
CMD ["run"]
