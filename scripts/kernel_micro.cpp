// A developer's micro-benchmark of the multi-class kernel, outside Python: one instruction set,
// one logits dtype (float32 unless LD_MICRO_T says otherwise) and int64 labels, so that it
// compiles in about two minutes instead of the
// module's ten (the kernels are included in an anonymous namespace: only what main() uses is
// instantiated and optimised). For trying a kernel change before the full build; the numbers
// users see come from bench/bench_core.py. Build and run with scripts/kernel_micro.sh.
//
//   kernel_micro LAYOUT N C [INNER] [THREADS] [REPS]
//   LAYOUT: rows (N rows of C) or nchw (N x C x INNER)
// Prints the median time of, and its median ratio to, the read limit (a read of the logits),
// timed in alternation: cross_entropy, evaluate (statistics, top-1, 20 bins, per-class counts,
// no confusion matrix unless LD_MICRO_CONFUSION=1), the gradient into a separate array and in
// place.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "common.h"
#include <immintrin.h>

// The logits' type: -DLD_MICRO_T=bf16 -DLD_MICRO_DT=BF16 (or _Float16 / F16, double / F64).
#ifndef LD_MICRO_T
#define LD_MICRO_T float
#define LD_MICRO_DT F32
#endif

namespace lossdiag {
// What dispatch.cpp defines for the module.
void* scratch_alloc(int64_t count, int64_t elem_size, bool zero) {
  int64_t bytes = 0;
  if (count < 0 || elem_size <= 0 || __builtin_mul_overflow(count, elem_size, &bytes)) return nullptr;
  bytes = std::max<int64_t>(64, (bytes + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, (size_t)bytes);
  if (p && zero) std::memset(p, 0, (size_t)bytes);
  return p;
}
void scratch_free(void* p) { std::free(p); }
static int64_t g_wide = 2048;
int64_t wide_min_classes() { return g_wide; }
void set_wide_min_classes(int64_t c) { g_wide = c; }
namespace {
#include "simd_math.h"
#include "kernels_impl.h"
}  // namespace
}  // namespace lossdiag

using namespace lossdiag;

int main(int argc, char** argv) {
  if (argc < 4) { std::fprintf(stderr, "usage: %s rows|nchw N C [INNER] [THREADS] [REPS]\n", argv[0]); return 2; }
  const bool rows = !std::strcmp(argv[1], "rows");
  const int64_t N = std::atoll(argv[2]), C = std::atoll(argv[3]);
  const int64_t inner = argc > 4 ? std::atoll(argv[4]) : 1;
  const int threads = argc > 5 ? std::atoi(argv[5]) : 2;
  const int reps = argc > 6 ? std::atoi(argv[6]) : 21;
  const int64_t E = rows ? N * inner : N * inner, n = E * C;
  LD_MICRO_T* x = (LD_MICRO_T*)std::aligned_alloc(64, ((size_t)n * sizeof(LD_MICRO_T) + 127) / 64 * 64);
  LD_MICRO_T* g = (LD_MICRO_T*)std::aligned_alloc(64, ((size_t)n * sizeof(LD_MICRO_T) + 127) / 64 * 64);
  std::vector<int64_t> y((size_t)E);
  std::mt19937_64 rng(1);
  std::normal_distribution<float> nd(0.f, 3.f);
  for (int64_t i = 0; i < n; ++i) x[i] = (LD_MICRO_T)nd(rng);
  for (auto& v : y) v = (int64_t)(rng() % (uint64_t)C);
  std::memset(g, 0, (size_t)n * sizeof(LD_MICRO_T));

  CEArgs a;
  a.x = x; a.xdt = LD_MICRO_DT; a.t = y.data(); a.tdt = I64; a.N = N; a.C = C; a.E = E;
  a.inner = rows ? 1 : inner; a.S = E / N; a.rows = rows; a.nthreads = threads;
  const int bins = 20;
  std::vector<int64_t> cc(C), cp(C), ct(C), th(bins), ch(bins), cr(bins), mh(bins);
  std::vector<double> cl(C), cs(bins);
  const bool want_cm = std::getenv("LD_MICRO_CONFUSION") && std::atoi(std::getenv("LD_MICRO_CONFUSION"));
  std::vector<int64_t> cm(want_cm ? C * C : 0);

  volatile double sink = 0;
  auto call = [&](int which) {
    CEArgs b = a; CEResult r;
    if (which == 0) { sink = mem_read_entry(x, n * (int64_t)sizeof(LD_MICRO_T), threads); return; }
    if (which == 2) {
      b.stats = true; b.topk = true; b.nk = 1; b.ks[0] = 1; b.bins = bins;
      b.class_loss = cl.data(); b.class_count = cc.data(); b.class_pred = cp.data(); b.class_tp = ct.data();
      b.true_hist = th.data(); b.conf_hist = ch.data(); b.conf_correct = cr.data(); b.conf_sum = cs.data();
      b.margin_hist = mh.data(); b.confusion = want_cm ? cm.data() : nullptr;
    }
    if (which == 3) { b.grad = true; b.g = g; b.gscale = 1.0 / E; }
    // In place: the logits become the gradient; they are restored after each round.
    if (which == 4) { b.grad = true; b.g = x; b.gscale = 1.0 / E; }
    ce_flags<LD_MICRO_T, false>(b, r);
    sink = r.nll_sum;
  };
  CEResult rce; { CEArgs b = a; ce_flags<LD_MICRO_T, false>(b, rce); }
  call(2);
  CEResult rev;
  {  // the checksums of one evaluate call
    CEArgs b = a; b.stats = true; b.topk = true; b.nk = 1; b.ks[0] = 1; b.bins = bins;
    b.class_loss = cl.data(); b.class_count = cc.data(); b.class_pred = cp.data(); b.class_tp = ct.data();
    b.true_hist = th.data(); b.conf_hist = ch.data(); b.conf_correct = cr.data(); b.conf_sum = cs.data();
    b.margin_hist = mh.data(); b.confusion = want_cm ? cm.data() : nullptr;
    std::fill(cc.begin(), cc.end(), 0); std::fill(cp.begin(), cp.end(), 0); std::fill(ct.begin(), ct.end(), 0);
    ce_flags<LD_MICRO_T, false>(b, rev);
  }
  int64_t ctp = 0; for (auto v : ct) ctp += v;
  std::vector<LD_MICRO_T> keep(x, x + n);
  // Timed in alternation, round by round: medians of the times and of the per-round ratios to
  // the read (the machine's speed drifts; a ratio within one round does not).
  const char* names[] = {"read", "ce", "evaluate", "grad", "grad in place"};
  std::vector<double> t[5], q[5];
  for (int w = 0; w < 5; ++w) call(w);
  std::memcpy(x, keep.data(), (size_t)n * sizeof(LD_MICRO_T));
  for (int i = 0; i < reps; ++i) {
    double ti[5];
    for (int w = 0; w < 5; ++w) {
      const auto t0 = std::chrono::steady_clock::now();
      call(w);
      ti[w] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      t[w].push_back(ti[w]);
    }
    std::memcpy(x, keep.data(), (size_t)n * sizeof(LD_MICRO_T));  // the logits again (not timed)
    for (int w = 0; w < 5; ++w) q[w].push_back(ti[w] / ti[0]);
  }
  std::memcpy(x, keep.data(), (size_t)n * sizeof(LD_MICRO_T));
  auto med = [](std::vector<double> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; };
  const double mb = n * (double)sizeof(LD_MICRO_T) / 1e6;
  std::printf("%s N=%lld C=%lld inner=%lld threads=%d (%.0f MB): loss/elem %.6f\n", rows ? "rows" : "nchw",
              (long long)N, (long long)C, (long long)inner, threads, mb, rce.nll_sum / (double)E);
  std::printf("  evaluate: loss/elem %.6f correct %lld nonfinite %lld true_prob %.6f entropy %.6f tp %lld\n",
              rev.nll_sum / (double)E, (long long)rev.correct[0], (long long)rev.nonfinite,
              rev.true_prob_sum / (double)E, rev.entropy_sum / (double)E, (long long)ctp);
  for (int w = 0; w < 5; ++w)
    std::printf("  %-14s %8.3f ms  x%.2f read (paired)\n", names[w], med(t[w]), med(q[w]));
  (void)sink;
  return 0;
}
