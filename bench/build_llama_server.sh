#!/usr/bin/env bash
# Build llama.cpp's `llama-server` from the llama.cpp sources vendored in the
# llama-cpp-python sdist (same llama.cpp the project's Python binding uses),
# CPU only, and install it outside the repository.
#
#   bash bench/build_llama_server.sh            # -> /work/cache/llama-server/bin/llama-server
#   PREFIX=/opt/llama-server JOBS=8 bash bench/build_llama_server.sh
#
# Then: python bench/sdf_bench.py --llama-server "$PREFIX/bin/llama-server"
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
SRC_DIR="${SRC_DIR:-/work/cache/src}"
PREFIX="${PREFIX:-/work/cache/llama-server}"
JOBS="${JOBS:-2}"
PIP="${PIP:-python -m pip}"

mkdir -p "$SRC_DIR" "$PREFIX/bin"
SDIST="$SRC_DIR/llama_cpp_python-$VERSION.tar.gz"
if [ ! -f "$SDIST" ]; then
    $PIP download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$SRC_DIR"
fi
TREE="$SRC_DIR/llama_cpp_python-$VERSION"
if [ ! -d "$TREE" ]; then
    tar -xzf "$SDIST" -C "$SRC_DIR"
fi
LLAMA="$TREE/vendor/llama.cpp"
[ -f "$LLAMA/CMakeLists.txt" ] || { echo "no llama.cpp tree in $TREE/vendor" >&2; exit 1; }

# LLAMA_CURL is deprecated (ignored) in this tree; OpenSSL is only needed for
# downloading models over HTTPS, which the bench never does.
cmake -S "$LLAMA" -B "$LLAMA/build" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=ON \
    -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_OPENSSL=OFF
nice -n 15 cmake --build "$LLAMA/build" --target llama-server -j"$JOBS"
install -m 0755 "$LLAMA/build/bin/llama-server" "$PREFIX/bin/llama-server"
"$PREFIX/bin/llama-server" --version || true
echo "installed $PREFIX/bin/llama-server"
