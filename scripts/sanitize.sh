#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer run of the CPU core: builds lossdiag._core with
# both sanitizers into its own directory (build/asan; the normal build is left alone), then runs
# the test suite and a slice of the fuzzer (scripts/fuzz.py) against it, at every SIMD level.
#
#   scripts/sanitize.sh                 # build, suite, 3 x 2000 fuzz cases
#   FUZZ_CASES=20000 scripts/sanitize.sh
#   SKIP_BUILD=1 SKIP_SUITE=1 scripts/sanitize.sh    # fuzz only, with the existing build
#   PYTEST_ARGS="tests/test_bad_input.py" scripts/sanitize.sh
#
# The ISA translation units are compiled at -O1: at -O3 with the sanitizers GCC 12 needs over 40
# CPU-minutes per file. Any sanitizer report aborts the process (halt_on_error), so a finding
# shows as a failed pytest run or as a "crash" of the fuzzer, with the report on stderr. Leak
# detection is off (the interpreter itself never frees its arenas). Exit status: 0 when clean.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${BUILD:-$ROOT/build/asan}"
PY="${PYTHON:-python}"
CXX="${CXX:-g++}"
FUZZ_CASES="${FUZZ_CASES:-2000}"
JOBS="${JOBS:-2}"

SAN=(-fsanitize=address,undefined -fno-sanitize=vptr -fno-sanitize-recover=all
     -fno-omit-frame-pointer -g)
COMMON=(-std=c++17 -fPIC -fvisibility=hidden -fopenmp -ffp-contract=off -fno-trapping-math
        -DLOSSDIAG_X86_MULTI=1 -Wall -Wno-unused-function "${SAN[@]}")
read -r -a PYINC <<< "$("$PY" -m pybind11 --includes)"
EXT="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
PKG="$BUILD/python/lossdiag"

if [[ -z "${SKIP_BUILD:-}" ]]; then
  mkdir -p "$BUILD/obj"
  compile() {  # source, flags...
    local src="$1"; shift
    local obj="$BUILD/obj/$(basename "$src" .cpp).o"
    echo "compile $src $*" >&2
    "$CXX" "${COMMON[@]}" "${PYINC[@]}" "$@" -c "$ROOT/cpp/$src" -o "$obj"
  }
  # One compiler at a time: the machine is shared (set PARALLEL=1 to run them together).
  run() { if [[ -n "${PARALLEL:-}" ]]; then "$@" & else "$@"; fi; }
  run compile module.cpp -O1
  run compile bind_core.cpp -O1
  run compile dispatch.cpp -O1
  run compile isa_base.cpp -O1
  run compile isa_avx2.cpp -O1 -mavx2 -mfma -mf16c -mbmi2
  run compile isa_avx512.cpp -O1 -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma \
    -mf16c -mbmi2 -mprefer-vector-width=512
  wait
  mkdir -p "$PKG"
  "$CXX" -shared -fopenmp "${SAN[@]}" "$BUILD"/obj/*.o -o "$BUILD/_core$EXT"
fi

# The package: this checkout's Python files with the sanitized core.
rm -rf "$PKG"
mkdir -p "$PKG"
cp -r "$ROOT/python/lossdiag/." "$PKG/"
rm -rf "$PKG"/_core*.so "$PKG"/_cuda*.so
find "$PKG" -name __pycache__ -prune -exec rm -rf {} +
cp "$BUILD/_core$EXT" "$PKG/"

export PYTHONPATH="$BUILD/python"
export LD_PRELOAD="$("$CXX" -print-file-name=libasan.so) $("$CXX" -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:allocator_may_return_null=1:detect_odr_violation=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

"$PY" -c 'import lossdiag, sys; print("sanitized core:", lossdiag._core.__file__, lossdiag.info()["simd"], file=sys.stderr)'

status=0
if [[ -z "${SKIP_SUITE:-}" ]]; then
  for simd in ${SIMDS:-avx512 avx2 base}; do
    echo "== test suite, LOSSDIAG_SIMD=$simd" >&2
    # shellcheck disable=SC2086
    (cd "$ROOT" && LOSSDIAG_SIMD=$simd LOSSDIAG_FUZZ_CASES=${SUITE_FUZZ_CASES:-500} \
      "$PY" -m pytest -q -x -p no:cacheprovider ${PYTEST_ARGS:-tests}) || status=1
    [[ -n "${ALL_SIMDS:-}" ]] || break  # the suite itself switches SIMD levels where it matters
  done
fi
if [[ "$FUZZ_CASES" -gt 0 ]]; then
  echo "== fuzz: $FUZZ_CASES cases per SIMD level" >&2
  for simd in avx512 avx2 base; do
    "$PY" "$ROOT/scripts/fuzz.py" --cases "$FUZZ_CASES" --start $((10**7)) --batch 250 \
      --jobs "$JOBS" --simd "$simd" --timeout 1800 || status=1
  done
fi
exit $status
