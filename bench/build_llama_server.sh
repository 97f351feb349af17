#!/usr/bin/env bash
# Build llama.cpp's `llama-server` from the llama.cpp sources vendored in the
# llama-cpp-python sdist (the same llama.cpp the project's Python binding uses),
# CPU only, and install it outside the repository.
#
#   bash bench/build_llama_server.sh                  # full build
#   LINK_BINDING_LIBS=.venv/lib/python3.11/site-packages/llama_cpp/lib \
#       bash bench/build_llama_server.sh              # server code only (see below)
#   PREFIX=/opt/llama-server JOBS=8 bash bench/build_llama_server.sh
#
# Then: python bench/sdf_bench.py --llama-server "$PREFIX/bin/llama-server"
#
# Full build: ggml, libllama, mtmd, common and the server, statically linked (~350 compile
# units: about an hour on a shared 2-core VM, a few minutes on a workstation).
# LINK_BINDING_LIBS=DIR: compile only the server's own code (common, server, cpp-httplib, ui)
# and link it against the shared libllama/ggml/mtmd that the installed llama-cpp-python
# wheel ships in DIR (it must be the same version as the sdist: the script checks). The
# libraries are copied next to the binary (PREFIX/lib, found through an $ORIGIN rpath).
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
SRC_DIR="${SRC_DIR:-/work/cache/src}"
PREFIX="${PREFIX:-/work/cache/llama-server}"
JOBS="${JOBS:-2}"
PIP="${PIP:-python -m pip}"
BINDING_LIBS="${LINK_BINDING_LIBS:-}"

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
BUILD="$LLAMA/build"
[ -f "$LLAMA/CMakeLists.txt" ] || { echo "no llama.cpp tree in $TREE/vendor" >&2; exit 1; }

# LLAMA_CURL is deprecated (ignored) in this tree; OpenSSL is only needed for
# downloading models over HTTPS, which the bench never does.
cmake -S "$LLAMA" -B "$BUILD" \
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

if [ -z "$BINDING_LIBS" ]; then
    nice -n 15 cmake --build "$BUILD" --target llama-server -j"$JOBS"
    install -m 0755 "$BUILD/bin/llama-server" "$PREFIX/bin/llama-server"
else
    BINDING_LIBS="$(cd "$BINDING_LIBS" && pwd)"
    for lib in libllama.so libmtmd.so libggml.so libggml-base.so libggml-cpu.so; do
        [ -e "$BINDING_LIBS/$lib" ] || { echo "$BINDING_LIBS/$lib: missing" >&2; exit 1; }
    done
    want="$(sed -n 's/^set(GGML_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\))$/\2/p' \
        "$LLAMA/ggml/CMakeLists.txt" | paste -sd.)"
    have="$(ls "$BINDING_LIBS" | sed -n 's/^libggml-base\.so\.\([0-9]*\.[0-9]*\.[0-9]*\)$/\1/p' | head -1)"
    if [ -n "$want" ] && [ "$want" != "$have" ]; then
        echo "the binding's ggml is $have, the sdist's is $want: build without LINK_BINDING_LIBS" >&2
        exit 1
    fi
    # each target's own objects only (its build.make), not its dependencies (Makefile2)
    cd "$BUILD"
    for dir in vendor/hash/CMakeFiles/vendor-hash.dir vendor/cpp-httplib/CMakeFiles/cpp-httplib.dir \
               tools/ui/CMakeFiles/llama-ui.dir common/CMakeFiles/llama-common-base.dir \
               common/CMakeFiles/llama-common.dir tools/server/CMakeFiles/server-context.dir \
               tools/server/CMakeFiles/llama-server-impl.dir; do
        nice -n 15 make -s -f "$dir/build.make" "$dir/depend"
        nice -n 15 make -s -j"$JOBS" -f "$dir/build.make" "$dir/build"
    done
    nice -n 15 make -s -f tools/server/CMakeFiles/llama-server.dir/build.make \
        tools/server/CMakeFiles/llama-server.dir/main.cpp.o
    mkdir -p "$PREFIX/lib"
    cp -a "$BINDING_LIBS"/lib*.so* "$PREFIX/lib/"
    # shellcheck disable=SC2016  # $ORIGIN is for the dynamic loader
    c++ -O3 -DNDEBUG tools/server/CMakeFiles/llama-server.dir/main.cpp.o \
        -o "$PREFIX/bin/llama-server" \
        tools/server/libllama-server-impl.a tools/server/libserver-context.a \
        common/libllama-common.a common/libllama-common-base.a vendor/hash/libvendor-hash.a \
        tools/ui/libllama-ui.a vendor/cpp-httplib/libcpp-httplib.a \
        -L"$PREFIX/lib" -lmtmd -lllama -lggml -lggml-base -lggml-cpu -lpthread -ldl \
        -Wl,-rpath,'$ORIGIN/../lib'
fi
"$PREFIX/bin/llama-server" --version || true
echo "installed $PREFIX/bin/llama-server"
