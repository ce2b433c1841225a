# A source toolchain: the PyMNN wheel built from one MNN commit, in a venv with numpy 2, plus the
# MNNConvert binary. Build context: ca-bundle.crt, the wheel, MNNConvert.
ARG BASE
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv libstdc++6 \
 && rm -rf /var/lib/apt/lists/*
ARG NUMPY_VERSION
COPY ca-bundle.crt /tmp/ca-bundle.crt
COPY *.whl /tmp/wheels/
# The mnnconvert/mnnquant console scripts pip-install a logging SDK and upload command lines:
# they are removed; the harness calls the C extension (_tools) instead.
RUN python3 -m venv /opt/venv \
 && PIP_CERT=/tmp/ca-bundle.crt PIP_INDEX_URL=https://pypi.org/simple PIP_CONFIG_FILE=/dev/null \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    /opt/venv/bin/pip install "numpy==${NUMPY_VERSION}" /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels /tmp/ca-bundle.crt /opt/venv/bin/mnnconvert /opt/venv/bin/mnnquant
COPY MNNConvert /usr/local/bin/MNNConvert
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp
CMD ["python", "-c", "import MNN, _tools; print(MNN.version())"]
