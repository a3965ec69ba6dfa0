#!/usr/bin/env bash
# Builds the C ABI library and runs its consumers: the C test program and example, the C++
# example (all under AddressSanitizer + UBSan), and the Python package's tests. The same greedy
# tokens come out of Rust (tests/demo.rs), C, C++ and Python.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
# --tests: the same feature set as `cargo test` (dev-dependencies unify features), so after the
# README test command nothing is rebuilt; the cdylib is among the outputs.
cargo build --features ndarray --lib --tests
LIB="$TARGET/debug"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export LD_LIBRARY_PATH="$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -g"

echo "-- C test program (ASan + UBSan)"
gcc -std=c11 -Wall -Wextra -Werror $SAN -I include ffi/c/test_capi.c -L "$LIB" -lgraftlm -lpthread -o "$WORK/test_capi"
"$WORK/test_capi" "$PWD" "$WORK/export"

echo "-- soak: 8 threads generating while adapters change (ASan + UBSan, 5 s)"
gcc -std=c11 -Wall -Wextra -Werror $SAN -I include ffi/c/soak.c -L "$LIB" -lgraftlm -lpthread -o "$WORK/soak"
"$WORK/soak" "$PWD" 5

echo "-- C example"
gcc -std=c11 -Wall -Wextra -Werror $SAN -I include ffi/c/example.c -L "$LIB" -lgraftlm -o "$WORK/example_c"
"$WORK/example_c" examples/demo/model "" "The Python interpreter" > "$WORK/c.txt"

echo "-- C++ example (RAII wrapper)"
g++ -std=c++17 -Wall -Wextra -Werror $SAN -I include -I ffi/cpp ffi/cpp/example.cpp -L "$LIB" -lgraftlm -o "$WORK/example_cpp"
"$WORK/example_cpp" examples/demo/model "" "The Python interpreter" > "$WORK/cpp.txt"
want="ids: $(python3 -c 'import json; print(" ".join(map(str, json.load(open("examples/demo/reference.json"))["greedy_new_ids"])))')"
grep -qx "$want" "$WORK/cpp.txt" || { echo "C++ greedy ids differ: $(tail -1 "$WORK/cpp.txt") vs $want"; exit 1; }
head -c 150 "$WORK/c.txt" | diff -q - <(head -c 150 "$WORK/cpp.txt") >/dev/null || { echo "C and C++ texts differ"; exit 1; }

echo "-- Python package"
python3 -m pytest --version >/dev/null 2>&1 || python3 -m pip install --quiet pytest
GRAFTLM_LIB="$LIB/libgraftlm.so" PYTHONPATH=ffi/python python3 -m pytest -q ffi/python/tests
