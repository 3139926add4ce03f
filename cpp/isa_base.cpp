// The kernels compiled for one instruction set (flags set per file in CMakeLists.txt).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "common.h"

#define LD_ISA_NAME "base"
namespace lossdiag {
namespace isa_base {
#include "simd_math.h"
#include "kernels_impl.h"
}  // namespace isa_base
}  // namespace lossdiag
