// Picks the widest instruction set this CPU supports, once; LOSSDIAG_SIMD=base|avx2|avx512
// forces a lower one (used by the tests to exercise every build on one machine).
#include <cstdint>
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

// ---------------------------------------------------------------------------------------------
// Scratch memory (compiled once, with the baseline flags).
static int64_t g_scratch_limit = 0;  // bytes per allocation; 0: none (tests only)
static int64_t g_wide_min_classes = 2048;  // measured crossover (see kernels/ce_wide.h)

void* scratch_alloc(int64_t count, int64_t elem_size, bool zero) {
  if (count < 0 || elem_size <= 0) return nullptr;
  int64_t bytes = 0;
  if (__builtin_mul_overflow(count, elem_size, &bytes) || bytes > (INT64_MAX >> 1)) return nullptr;
  bytes = (bytes + 63) / 64 * 64;
  if (bytes == 0) bytes = 64;
  const int64_t lim = __atomic_load_n(&g_scratch_limit, __ATOMIC_RELAXED);
  if (lim > 0 && bytes > lim) return nullptr;
  void* p = std::aligned_alloc(64, (size_t)bytes);
  if (p && zero) std::memset(p, 0, (size_t)bytes);
  return p;
}
void scratch_free(void* p) { std::free(p); }
void set_scratch_limit(int64_t bytes) { __atomic_store_n(&g_scratch_limit, bytes, __ATOMIC_RELAXED); }
int64_t wide_min_classes() { return __atomic_load_n(&g_wide_min_classes, __ATOMIC_RELAXED); }
void set_wide_min_classes(int64_t c) { __atomic_store_n(&g_wide_min_classes, c < 1 ? 1 : c, __ATOMIC_RELAXED); }

bool set_kernels(const char* name) {
  if (!supported(name)) return false;
  active() = table_for(name);
  return true;
}

}  // namespace lossdiag
