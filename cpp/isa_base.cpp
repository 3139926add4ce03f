// The kernels compiled for one instruction set (flags set per file in CMakeLists.txt).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "common.h"

#define LD_ISA_NAME "base"
#define LD_VW 16  // SIMD register width in bytes for the explicit vector loops
#define LD_VFMA_PS(a, b, c) a * b + c
#define LD_VFMA_PD(a, b, c) a * b + c
namespace lossdiag {
namespace isa_base {
#include "simd_math.h"
#include "kernels_impl.h"
}  // namespace isa_base
}  // namespace lossdiag
