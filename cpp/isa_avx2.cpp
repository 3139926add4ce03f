// The kernels compiled for one instruction set (flags set per file in CMakeLists.txt).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "common.h"
#include <immintrin.h>

#define LD_ISA_NAME "avx2"
#define LD_VW 32  // SIMD register width in bytes for the explicit vector loops
#define LD_VFMA_PS(a, b, c) (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c)
#define LD_VFMA_PD(a, b, c) (vd)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c)
namespace lossdiag {
namespace isa_avx2 {
#include "simd_math.h"
#include "kernels_impl.h"
}  // namespace isa_avx2
}  // namespace lossdiag
