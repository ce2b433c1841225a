#!/bin/bash
# Builds PyMNN (converter and LLM runtime included) and MNNConvert from the source at /src into /out.
# Runs inside the builder image with no network. usage: build-mnn.sh <version> ; JOBS bounds make.
set -euo pipefail
VERSION=${1:?usage: build-mnn.sh <version>}
JOBS=${JOBS:-2}
# CMake reads these as the default compiler launchers: ccache for every C/C++ object.
export CMAKE_C_COMPILER_LAUNCHER=ccache CMAKE_CXX_COMPILER_LAUNCHER=ccache CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
ccache -z >/dev/null
start=$(date +%s)
cd /src/pymnn/pip_package
# build_deps.py runs `make -j32`: bound it, and build the MNNConvert binary too.
grep -q 'make MNN MNNTrain MNNConvertDeps -j32' build_deps.py
sed "s/make MNN MNNTrain MNNConvertDeps -j32/make MNN MNNTrain MNNConvertDeps MNNConvert -j${JOBS}/" \
    build_deps.py > /tmp/build_deps_bounded.py
# `llm` is what MNN documents for PyMNN's LLM runtime (MNN.llm): -DMNN_BUILD_LLM=ON, which also turns on
# MNN_LOW_MEMORY and MNN_SUPPORT_TRANSFORMER_FUSE (and, at head, the omni parts), as in the PyPI wheels.
python /tmp/build_deps_bounded.py llm
grep -q '^MNN_BUILD_LLM:BOOL=ON' /src/pymnn_build/CMakeCache.txt
# build_deps.py ignores failures (os.system): make again, so that a failure stops the build here.
make -C /src/pymnn_build -j"${JOBS}" MNN MNNTrain MNNConvertDeps MNNConvert
compiled=$(date +%s)
rm -rf build dist
# ccache for setup.py's extension objects (as CC: exported before cmake it breaks MNN's .S objects).
CC="ccache gcc" CXX="ccache g++" python setup.py bdist_wheel --version "${VERSION}"
done_at=$(date +%s)
mkdir -p /out
cp dist/*.whl /out/
cp /src/pymnn_build/MNNConvert /out/MNNConvert
printf '{"compile_s": %d, "wheel_s": %d}\n' $((compiled - start)) $((done_at - compiled)) > /out/timings.json
ccache -s > /out/ccache-stats.txt || true
