# The build environment for MNN source toolchains. The MNN source is not in it: it is bind-mounted
# at /src when a build runs, with /out for artifacts and /ccache for the compiler cache.
ARG BASE
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        build-essential cmake ccache python3-dev python3-venv zlib1g-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# pip trusts the host's CA bundle (corporate proxies need it) and ignores any host pip config.
COPY ca-bundle.crt /etc/ssl/certs/mnn-matrix-host-ca.crt
ENV PIP_CERT=/etc/ssl/certs/mnn-matrix-host-ca.crt PIP_INDEX_URL=https://pypi.org/simple \
    PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# numpy 2: a PyMNN built against numpy 1.x segfaults under numpy 2.x.
ARG NUMPY_VERSION
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install "numpy==${NUMPY_VERSION}" setuptools==75.8.0 wheel==0.45.1
ENV PATH=/opt/venv/bin:$PATH CCACHE_DIR=/ccache HOME=/tmp
COPY build-mnn.sh /usr/local/bin/build-mnn.sh
