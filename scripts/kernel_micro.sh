#!/usr/bin/env bash
# Builds scripts/kernel_micro.cpp for one instruction set and runs it with the given arguments.
#   scripts/kernel_micro.sh [avx512|avx2|base] LAYOUT N C [INNER] [THREADS] [REPS]
# The binary goes to build/micro/; it is rebuilt when a kernel source is newer.
set -euo pipefail
cd "$(dirname "$0")/.."
isa=avx512
case "${1:-}" in avx512|avx2|base) isa=$1; shift;; esac
case $isa in
  avx512) flags="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c -mbmi2 -mprefer-vector-width=512"; vw=64;;
  avx2) flags="-mavx2 -mfma -mf16c -mbmi2"; vw=32;;
  base) flags=""; vw=16;;
esac
mkdir -p build/micro
bin=build/micro/kernel_micro_$isa${LD_MICRO_TAG:-}
if [ ! -x "$bin" ] || [ -n "$(find cpp scripts/kernel_micro.cpp -newer "$bin" -name '*.h' -o -newer "$bin" -name '*.cpp' | head -1)" ]; then
  # The flags of cpp/CMakeLists.txt, and the macros each isa_*.cpp defines before the kernels.
  fma_ps="(vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c)"; fma_pd="(vd)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c)"
  [ $isa = avx2 ] && fma_ps="(vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c)" && fma_pd="(vd)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c)"
  [ $isa = base ] && fma_ps="(a) * (b) + (c)" && fma_pd="(a) * (b) + (c)"
  # shellcheck disable=SC2086
  c++ -std=c++17 -O3 -DNDEBUG -ffp-contract=off -fno-trapping-math -fopenmp $flags -Icpp \
    -DLD_ISA_NAME="\"$isa\"" -DLD_VW=$vw "-DLD_VFMA_PS(a,b,c)=$fma_ps" "-DLD_VFMA_PD(a,b,c)=$fma_pd" \
    -Wall -Wno-unused-function -Wno-maybe-uninitialized ${LD_MICRO_FLAGS:-} -o "$bin" scripts/kernel_micro.cpp
fi
exec "$bin" "$@"
