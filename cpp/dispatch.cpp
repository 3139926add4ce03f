// Picks the widest instruction set this CPU supports, once; LOSSDIAG_SIMD=base|avx2|avx512
// forces a lower one (used by the tests to exercise every build on one machine).
#include <cstdlib>
#include <cstring>
#include "common.h"

namespace lossdiag {

static bool supported(const char* name) {
  if (!std::strcmp(name, "base")) return true;
#if defined(LOSSDIAG_X86_MULTI)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (!std::strcmp(name, "avx2")) return avx2;
  if (!std::strcmp(name, "avx512"))
    return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#endif
  return false;
}

static KernelTable table_for(const char* name) {
#if defined(LOSSDIAG_X86_MULTI)
  if (!std::strcmp(name, "avx512")) return isa_avx512::table();
  if (!std::strcmp(name, "avx2")) return isa_avx2::table();
#endif
  (void)name;
  return isa_base::table();
}

const char* best_isa() {
  if (supported("avx512")) return "avx512";
  if (supported("avx2")) return "avx2";
  return "base";
}

static KernelTable& active() {
  static KernelTable t = [] {
    const char* want = std::getenv("LOSSDIAG_SIMD");
    if (want && supported(want)) return table_for(want);
    return table_for(best_isa());
  }();
  return t;
}

const KernelTable& kernels() { return active(); }

bool set_kernels(const char* name) {
  if (!supported(name)) return false;
  active() = table_for(name);
  return true;
}

}  // namespace lossdiag
