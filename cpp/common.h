// Plain data passed from the bindings to the ISA-specific kernels. No templates here: this header
// is included by translation units compiled for different instruction sets, and anything with
// vague linkage (templates, inline functions) could be merged across them by the linker.
#pragma once
#include <cstdint>
#include <type_traits>
#include <utility>

namespace lossdiag {

// BF16 = 3 as in the CUDA backend (cpp/cuda/cuda_api.h).
enum DType : int { F16 = 0, F32 = 1, F64 = 2, BF16 = 3 };
// Label dtypes, read as they are (no conversion copy).
enum LType : int { U8 = 0, I8, U16, I16, U32, I32, U64, I64, LBOOL };

constexpr int kMaxTopK = 8;
// Upper bounds checked by the bindings (and, with clear messages, in Python before them).
constexpr int kMaxThreads = 1024;      // set_num_threads / OMP_NUM_THREADS
constexpr int kMaxBins = 1 << 16;      // histogram bins
constexpr int64_t kMaxClasses = 2147483647;  // C: labels and class indices are int32 in the lanes

// Scratch memory of the kernels (defined once, in dispatch.cpp): 64-byte aligned, zeroed when
// `zero`; nullptr when the allocation fails, when the size overflows, or beyond the limit that
// tests set with set_scratch_limit (to exercise the failure path without exhausting memory).
void* scratch_alloc(int64_t count, int64_t elem_size, bool zero);
void scratch_free(void* p);
void set_scratch_limit(int64_t bytes);  // <= 0: no limit
// Classes above which the multi-class kernel takes the wide-row path (see kernels/ce_wide.h).
int64_t wide_min_classes();
void set_wide_min_classes(int64_t c);

// Thrown by a kernel (after its parallel region, never inside one) when scratch memory could not
// be allocated; the bindings turn it into a MemoryError naming the argument that drove the size.
// A plain struct (no vtable): it is thrown from every ISA translation unit.
enum AllocWhat : int { kAllocClasses = 0, kAllocBins, kAllocStats, kAllocSamples, kAllocRows };
struct AllocFailure { int64_t bytes; int what; };

// Multi-class cross-entropy / accuracy / one-pass statistics over logits viewed as
// (N, C, inner) when !rows (class stride = inner) or as (E, C) rows when rows.
struct CEArgs {
  const void* x = nullptr; int xdt = F32;
  const void* t = nullptr; int tdt = I64;   // labels (LType) or soft targets (DType) when soft
  bool soft = false;
  int64_t N = 0, C = 0, inner = 1;          // inner: pixels per sample for the NCHW layout
  int64_t E = 0;                            // number of elements (pixels or rows)
  int64_t S = 1;                            // elements per sample (E / N)
  bool rows = false;                        // class axis contiguous (N,C) or channels-last
  const double* w = nullptr;                // class weights or null
  int64_t ignore = -100;
  double eps = 0.0;                         // label smoothing
  bool probs = false;                       // from_logits=False
  bool loss = true, grad = false, stats = false, topk = false;
  double gscale = 1.0;                      // gradient scale from the reduction
  void* g = nullptr;                        // gradient out, same layout/dtype as x
  void* loss_out = nullptr;                 // per-element loss (float32 or float64) or null
  int nk = 0; int64_t ks[kMaxTopK] = {};
  int bins = 0;
  int64_t* confusion = nullptr; double* class_loss = nullptr; int64_t* class_count = nullptr;
  // Per-class predicted counts and true positives (the confusion's column sums and diagonal),
  // filled when not null: with confusion null they are what per-class metrics need in O(C).
  int64_t* class_pred = nullptr; int64_t* class_tp = nullptr;
  int64_t* true_hist = nullptr; int64_t* conf_hist = nullptr; int64_t* conf_correct = nullptr;
  double* conf_sum = nullptr; int64_t* margin_hist = nullptr;
  bool per_sample = false;
  double* s_loss = nullptr; int64_t* s_count = nullptr; int64_t* s_correct = nullptr;
  int64_t* s_inter = nullptr; int64_t* s_true = nullptr; int64_t* s_pred = nullptr;
  int nthreads = 1;
};

struct CEResult {
  double nll_sum = 0, smooth_sum = 0, wsum = 0;
  int64_t count = 0, ignored = 0, nonfinite = 0, nonfinite_rows = 0;
  int64_t correct[kMaxTopK] = {};
  double true_prob_sum = 0, entropy_sum = 0;
  int64_t below_inv_e = 0;
  bool bad = false; int64_t bad_value = 0, bad_index = -1;
};

// Binary cross-entropy over E elements (flattened, contiguous).
struct BCEArgs {
  const void* x = nullptr; int xdt = F32;
  const void* t = nullptr; int tdt = F32; bool tfloat = true;  // float target (DType) or label (LType)
  int64_t E = 0, N = 1, S = 1;
  const double* pw = nullptr; int64_t pw_len = 0, pw_inner = 1;  // pos_weight[(e / pw_inner) % pw_len]
  bool probs = false;
  bool loss = true, grad = false, stats = false, acc = false;
  double threshold = 0.0;
  double gscale = 1.0;
  void* g = nullptr; void* loss_out = nullptr;
  int bins = 0;
  int64_t* confusion = nullptr;  // 2x2
  double* class_loss = nullptr; int64_t* class_count = nullptr;
  int64_t* true_hist = nullptr; int64_t* conf_hist = nullptr; int64_t* conf_correct = nullptr;
  double* conf_sum = nullptr; int64_t* margin_hist = nullptr; int64_t* prob_hist = nullptr;
  int nthreads = 1;
};

struct BCEResult {
  double loss_sum = 0; int64_t count = 0, correct = 0, nonfinite = 0;
  double true_prob_sum = 0, entropy_sum = 0; int64_t below_inv_e = 0;
  bool bad = false; double bad_value = 0; int64_t bad_index = -1;
};

// Label pre-pass for the "mean" gradient normaliser: sum of weight[y] and count over non-ignored.
struct LabelArgs {
  const void* t = nullptr; int tdt = I64; int64_t E = 0, C = 0; int64_t ignore = -100;
  const double* w = nullptr; int nthreads = 1;
};
struct LabelResult { double wsum = 0; int64_t count = 0; bool bad = false; int64_t bad_value = 0, bad_index = -1; };

// Exact loss and accuracy surface of a two-weight logistic regression on a grid.
struct SurfaceArgs {
  const double* X = nullptr;   // (n, 2)
  const double* y = nullptr;   // (n,) in [0, 1]
  int64_t n = 0;
  const double* w1 = nullptr; int64_t n1 = 0;
  const double* w2 = nullptr; int64_t n2 = 0;
  double bias = 0.0;
  double* loss = nullptr; double* acc = nullptr;  // (n2, n1) row-major: loss[j*n1 + i] at (w1[i], w2[j])
  int nthreads = 1;
};

struct KernelTable {
  const char* name;
  void (*ce)(const CEArgs&, CEResult&);
  void (*bce)(const BCEArgs&, BCEResult&);
  void (*labels)(const LabelArgs&, LabelResult&);
  void (*surface)(const SurfaceArgs&);
  double (*mem_read)(const void*, int64_t, int);
  void (*mem_copy)(void*, const void*, int64_t, int);
};

const KernelTable& kernels();
bool set_kernels(const char* name);   // false if that ISA is not available here
const char* best_isa();

namespace isa_base { KernelTable table(); }
namespace isa_avx2 { KernelTable table(); }
namespace isa_avx512 { KernelTable table(); }

}  // namespace lossdiag
