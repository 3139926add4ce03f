// Plain parameter blocks shared by the pybind11 layer (module.cpp, host compiler) and the CUDA
// kernels (kernels.cu, nvcc). No CUDA types here: pointers are void* / fixed-width integers.
//
// Result slabs. Every call writes its numbers into two small device arrays that the Python side
// allocates zeroed and views (0-d CuPy arrays and CuPy vectors), so nothing is copied to the host:
//   f (float64): F_* scalars, then class_loss_sum[C], then conf_sum[bins]
//   i (int64):   I_* scalars, then confusion[C*C], class_count[C], true_hist[bins], conf_hist[bins],
//                conf_correct[bins], margin_hist[bins], prob_hist[bins], conf_fix[3*bins]
// conf_fix holds conf_sum as three 21-bit fixed-point chunks per bin (exact integer sums, so the
// order of accumulation cannot change the result): conf_sum = c0*2^-21 + c1*2^-42 + c2*2^-63.
// Without statistics C = bins = 0 (only the scalars exist).
#pragma once
#include <cstdint>

namespace ldcuda {

enum XType : int { X_F16 = 0, X_F32 = 1, X_F64 = 2, X_BF16 = 3 };               // float arrays
enum LType : int { L_U8 = 0, L_I8, L_U16, L_I16, L_U32, L_I32, L_U64, L_I64, L_BOOL };  // labels

enum Reduction : int { RED_NONE = 0, RED_MEAN = 1, RED_SUM = 2 };

enum FSlot : int {
  F_LOSS = 0,      // the reduced loss the function returns ("mean" or "sum"); NaN on bad labels
  F_NLL, F_SMOOTH, F_WSUM, F_TPS, F_ENT,
  F_LOSS_SUM,      // BatchStats.loss_sum
  F_MEAN,          // BatchStats.loss (the "mean" loss)
  F_ACC,           // F_ACC + k: correct[k] / count (NaN when count == 0), k < 8
  F_HEAD = F_ACC + 8
};
enum ISlot : int {
  I_COUNT = 0, I_IGNORED, I_NONFINITE, I_NFROWS, I_BELOW, I_ELEMENTS,
  I_CORRECT,                     // I_CORRECT + k, k < 8
  I_ERR = I_CORRECT + 8,         // ~index of the first bad label / target (0 = none)
  I_ERR_VAL,                     // its value (int64, or the bits of a float64 for BCE targets)
  I_ERRW,                        // ~index of the first bad weight / pos_weight (0 = none)
  I_ERRW_VAL,                    // its value (float64 bits)
  I_HEAD
};
constexpr int kNI = 13;          // integer per-block partials: I_COUNT..I_BELOW (5) + correct[8]

struct Layout {
  int64_t f_class_loss, f_conf_sum, f_size;
  int64_t i_confusion, i_class_count, i_true_hist, i_conf_hist, i_conf_correct, i_margin_hist,
      i_prob_hist, i_conf_fix, i_size;
};
Layout layout(int64_t C, int64_t bins);

// Multi-class cross-entropy / accuracy / one-pass statistics. Logits are (N, C, inner) with the
// class stride `inner` (NCHW) or (E, C) rows (rows = true: (N, C) and channels-last).
struct CEArgs {
  int device = 0; uintptr_t stream = 0;
  const void* x = nullptr; int xdt = X_F32;
  const void* t = nullptr; int tdt = L_I64; bool soft = false;  // labels (LType) or soft (XType)
  int64_t N = 0, C = 1, inner = 1, E = 0, S = 1;
  bool rows = false;
  const double* w = nullptr;          // class weights (float64, device) or null
  int64_t ignore = -100;
  double eps = 0.0;                   // label smoothing
  bool probs = false;                 // from_logits=False (Keras semantics)
  bool loss = true, grad = false, stats = false;
  int reduction = RED_MEAN;
  int nk = 0; int64_t ks[8] = {};
  void* g = nullptr;                  // gradient out (dtype xdt) or null
  void* loss_out = nullptr;           // per-element loss (float32, float64 for float64 logits)
  int bins = 0;
  double* f = nullptr; int64_t* i = nullptr;   // result slabs (zeroed)
  // per-sample statistics (evaluate(per_sample=True)), each zeroed int64 / float64
  bool per_sample = false;
  double* s_loss = nullptr; int64_t* s_count = nullptr; int64_t* s_correct = nullptr;
  int64_t* s_inter = nullptr; int64_t* s_true = nullptr; int64_t* s_pred = nullptr;
  double* elem_loss = nullptr;        // E float64 scratch for per-sample loss sums (S > 1)
};

struct BCEArgs {
  int device = 0; uintptr_t stream = 0;
  const void* x = nullptr; int xdt = X_F32;
  const void* t = nullptr; int tdt = X_F32; bool tfloat = true;
  int64_t E = 0;
  const double* pw = nullptr; int64_t pw_len = 0, pw_inner = 1;  // pos_weight[(e/inner) % len]
  bool probs = false, grad = false, stats = false;
  int reduction = RED_MEAN;
  double threshold = 0.0;
  void* g = nullptr; void* loss_out = nullptr;
  int bins = 0;
  double* f = nullptr; int64_t* i = nullptr;
};

// Device workspace: the launchers ask for scratch memory through this callback (the Python side
// allocates it from CuPy's stream-ordered pool and keeps it alive until the call returns).
using Alloc = void* (*)(void* ctx, int64_t nbytes);
struct Workspace {
  Alloc alloc = nullptr; void* ctx = nullptr;
  void* get(int64_t nbytes) const { return nbytes > 0 ? alloc(ctx, nbytes) : nullptr; }
};

// Launchers: enqueue everything on args.stream and return without synchronising.
// Throw std::runtime_error on a CUDA launch error.
void launch_ce(const CEArgs& a, const Workspace& ws);
void launch_bce(const BCEArgs& a, const Workspace& ws);
void launch_mem_read(int device, uintptr_t stream, const void* p, int64_t nbytes, uint64_t* out);

}  // namespace ldcuda
