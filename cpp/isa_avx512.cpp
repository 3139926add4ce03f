// The kernels compiled for one instruction set (flags set per file in CMakeLists.txt).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "common.h"
#include <immintrin.h>

#define LD_ISA_NAME "avx512"
#define LD_VW 64  // SIMD register width in bytes for the explicit vector loops
#define LD_VFMA_PS(a, b, c) (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c)
#define LD_VFMA_PD(a, b, c) (vd)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c)
namespace lossdiag {
namespace isa_avx512 {
#include "simd_math.h"
#include "kernels_impl.h"
}  // namespace isa_avx512
}  // namespace lossdiag
