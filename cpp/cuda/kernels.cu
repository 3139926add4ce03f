// CUDA kernels of lossdiag: cross-entropy (loss, gradient, accuracy, one-pass statistics) and
// binary cross-entropy, mirroring the CPU kernels in cpp/kernels_impl.h (same numerics: max-shifted
// log-sum-exp with the first maximum's exact 1 kept out of the sum and log1p, the same non-finite
// rules, top-k tie rule, histogram bin rules).
//
// Work decomposition (identical on every call with the same shape, so results are reproducible):
//  * The E elements (pixels or rows) are cut into tiles of T elements; T depends only on the shape.
//  * ce_kernel<F, G, CR>: G = 1 -> one thread per element (NCHW: adjacent threads on adjacent
//    pixels, loads coalesced along the pixel axis; rows with C <= CR are first staged through
//    shared memory with coalesced loads); G = 32 -> one warp per row (rows with C > CR).
//    CR > 0 keeps the element's C logits in registers (C <= CR), otherwise they are re-read
//    (L1/L2) for each pass.
//  * Every floating-point sum is deterministic: per-thread sums in a fixed element order, a fixed
//    reduction tree inside the block per tile, one partial per tile, and an ordered sum over tiles
//    in the finalize kernel. The loss therefore does not depend on the grid size, and evaluate()
//    gives bit for bit the loss of cross_entropy(). Per-class loss sums go to warp-private rows
//    (the lanes of a warp that share a class are added in lane order by the lowest one), combined
//    in warp order per block and in block order in the finalize kernel. The confidence sums per
//    bin are exact 3 x 21-bit fixed-point integers. Counts use integer atomics (order does not
//    matter) on per-block shared-memory histograms, aggregated per warp with __match_any_sync.
//  * No floating-point atomics, no host synchronisation: results land in device slabs.
//  * 64-bit element indexing throughout.
#ifdef LDCUDA_EMU  // host emulation for testing without a GPU (cpp/cuda/emu, tests only)
#include "emu/cuda_emu.h"
#define LD_DYN_SMEM(name) unsigned char* name = ::ldemu::dyn_smem()
#define LD_LAUNCH(k, grid, block, smem, stream) ::ldemu::launch(k, grid, block, smem)
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define LD_DYN_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#define LD_LAUNCH(k, grid, block, smem, stream) k<<<grid, block, smem, stream>>>
#endif

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda_api.h"

namespace ldcuda {

Layout layout(int64_t C, int64_t bins) {
  Layout L;
  L.f_class_loss = F_HEAD;
  L.f_conf_sum = F_HEAD + C;
  L.f_size = F_HEAD + C + bins;
  L.i_confusion = I_HEAD;
  L.i_class_count = I_HEAD + C * C;
  L.i_true_hist = L.i_class_count + C;
  L.i_conf_hist = L.i_true_hist + bins;
  L.i_conf_correct = L.i_conf_hist + bins;
  L.i_margin_hist = L.i_conf_correct + bins;
  L.i_prob_hist = L.i_margin_hist + bins;
  L.i_conf_fix = L.i_prob_hist + bins;
  L.i_size = L.i_conf_fix + 3 * bins;
  return L;
}

namespace {

typedef unsigned long long ull;
constexpr unsigned FULL = 0xffffffffu;
constexpr int NS = 5;          // float columns per tile: nll, smooth, wsum, true_prob, entropy
constexpr int BIG = 0x7fffffff;
constexpr double INV_E = 0.36787944117144233;
constexpr int kXchBytes = 384;  // per-warp exchange area: 32 doubles or 96 uint32
constexpr int kSmemBudget = 48 * 1024;

// ---------------------------------------------------------------------------------------------
// Scalar helpers.
__device__ __forceinline__ float ex(float v) { return expf(v); }
__device__ __forceinline__ double ex(double v) { return exp(v); }
__device__ __forceinline__ float lg(float v) { return logf(v); }
__device__ __forceinline__ double lg(double v) { return log(v); }
__device__ __forceinline__ float lg1p(float v) { return log1pf(v); }
__device__ __forceinline__ double lg1p(double v) { return log1p(v); }
template <class F> __device__ __forceinline__ F ninf() { return -(F)INFINITY; }

__device__ __forceinline__ float tof(__half v) { return __half2float(v); }
__device__ __forceinline__ float tof(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float tof(float v) { return v; }
__device__ __forceinline__ double tof(double v) { return v; }

// Element k of a float array of runtime dtype dt, converted to F (exact for wider F).
template <class F> __device__ __forceinline__ F ldx(const void* p, int64_t k, int dt) {
  switch (dt) {
    case X_F16: return (F)__half2float(static_cast<const __half*>(p)[k]);
    case X_BF16: return (F)__bfloat162float(static_cast<const __nv_bfloat16*>(p)[k]);
    case X_F32: return (F) static_cast<const float*>(p)[k];
    default: return (F) static_cast<const double*>(p)[k];
  }
}
template <class F> __device__ __forceinline__ void stx(void* p, int64_t k, int dt, F v) {
  switch (dt) {
    case X_F16: static_cast<__half*>(p)[k] = __float2half_rn((float)v); break;
    case X_BF16: static_cast<__nv_bfloat16*>(p)[k] = __float2bfloat16_rn((float)v); break;
    case X_F32: static_cast<float*>(p)[k] = (float)v; break;
    default: static_cast<double*>(p)[k] = (double)v; break;
  }
}
// Integer label k, read as is (uint64 beyond int64 reads negative: a bad label, as on the CPU).
__device__ __forceinline__ int64_t ldl(const void* p, int64_t k, int dt) {
  switch (dt) {
    case L_U8: case L_BOOL: return static_cast<const uint8_t*>(p)[k];
    case L_I8: return static_cast<const int8_t*>(p)[k];
    case L_U16: return static_cast<const uint16_t*>(p)[k];
    case L_I16: return static_cast<const int16_t*>(p)[k];
    case L_U32: return static_cast<const uint32_t*>(p)[k];
    case L_I32: return static_cast<const int32_t*>(p)[k];
    case L_U64: return (int64_t) static_cast<const uint64_t*>(p)[k];
    default: return static_cast<const int64_t*>(p)[k];
  }
}

// uint64 labels above INT64_MAX read negative: they never match a (negative) ignore_index.
__device__ __forceinline__ bool is_ignored(int64_t y, int64_t ignore, int dt) {
  return y == ignore && !(dt == L_U64 && y < 0);
}

__device__ __forceinline__ int bin_of(double v, int bins) {
  int b = (int)(v * (double)bins);  // saturating conversion; v is finite here
  b = b < 0 ? 0 : b;
  return b >= bins ? bins - 1 : b;
}

// q = a / b, r = a % b for a, b >= 0, with a 32-bit fast path.
__device__ __forceinline__ int64_t divmod(int64_t a, int64_t b, int64_t& r) {
  if (((a | b) >> 32) == 0) {
    const unsigned q = (unsigned)a / (unsigned)b;
    r = (int64_t)((unsigned)a - q * (unsigned)b);
    return q;
  }
  const int64_t q = a / b;
  r = a - q * b;
  return q;
}

// Records the first (lowest) bad index: slots hold ~index, 0 means none.
__device__ __forceinline__ void flag_bad(ull* slot, int64_t e) { atomicMax(slot, ~(ull)e); }

// Butterfly sums: both partners add the same two values, so every lane ends with identical bits.
template <class T> __device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
  return v;
}
template <class F> __device__ __forceinline__ F warp_max(F v) {  // no NaN in v
#pragma unroll
  for (int o = 16; o; o >>= 1) {
    const F w = __shfl_xor_sync(FULL, v, o);
    v = w > v ? w : v;
  }
  return v;
}
// Larger value wins, ties go to the smaller index (first occurrence). No NaN in m.
template <class F> __device__ __forceinline__ void warp_argmax(F& m, int& a) {
#pragma unroll
  for (int o = 16; o; o >>= 1) {
    const F m2 = __shfl_xor_sync(FULL, m, o);
    const int a2 = __shfl_xor_sync(FULL, a, o);
    if (m2 > m || (m2 == m && a2 < a)) { m = m2; a = a2; }
  }
}

// Deterministic block sum of n doubles per thread (warp butterflies, then warps in order). The
// result is valid in thread 0. `red` holds NW * n doubles. Must be called by the whole block.
template <int NT, int n>
__device__ __forceinline__ void block_sum(double (&v)[n], double* red) {
  constexpr int NW = NT / 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int j = 0; j < n; ++j) v[j] = warp_sum(v[j]);
  if (lane == 0) {
#pragma unroll
    for (int j = 0; j < n; ++j) red[warp * n + j] = v[j];
  }
  __syncthreads();
  if (threadIdx.x == 0) {
#pragma unroll
    for (int j = 0; j < n; ++j) {
      double s = red[j];
      for (int w = 1; w < NW; ++w) s += red[w * n + j];
      v[j] = s;
    }
  }
  __syncthreads();
}
template <int NT, int n>
__device__ __forceinline__ void block_isum(long long (&v)[n], long long* red) {
  constexpr int NW = NT / 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int j = 0; j < n; ++j) v[j] = warp_sum(v[j]);
  if (lane == 0) {
#pragma unroll
    for (int j = 0; j < n; ++j) red[warp * n + j] = v[j];
  }
  __syncthreads();
  if (threadIdx.x == 0) {
#pragma unroll
    for (int j = 0; j < n; ++j) {
      long long s = 0;
      for (int w = 0; w < NW; ++w) s += red[w * n + j];
      v[j] = s;
    }
  }
  __syncthreads();
}

// ---------------------------------------------------------------------------------------------
// Statistics: warp-aggregated updates. Every function below must be called by all 32 lanes of a
// converged warp; `act` is the ballot of the lanes whose `active` is true.
template <class K>
__device__ __forceinline__ void agg_count(ull* p, K key, unsigned act, bool active) {
  if (active) {
    const unsigned peers = __match_any_sync(act, key);
    if ((int)(threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&p[key], (ull)__popc(peers));
  }
}

struct StatsCtx {
  ull* class_count;   // then true_hist, conf_hist, conf_correct, margin_hist, prob_hist, fix[3]
  ull* true_hist; ull* conf_hist; ull* conf_correct; ull* margin_hist; ull* prob_hist; ull* cfix;
  ull* confusion;
  int C, bins, conf_stride;
  double* wrow;       // this warp's per-class loss row
  double* xd;         // this warp's exchange area (32 doubles, aliased by 96 uint32 as xu)
  unsigned* xu;
  ull* s_count; ull* s_correct; ull* s_inter; ull* s_true; ull* s_pred;  // per sample (global)
  int64_t Cs;         // classes per sample row of s_inter/s_true/s_pred
};

struct StatIn {
  bool vf = false;    // contributes an element to the statistics (valid, all logits finite)
  bool sv = false;    // counts in sample_count (valid element, finite or not)
  bool sc = false;    // counts in sample_correct (top-1 correct, no NaN; finite or not)
  int cls = 0, pred = 0;
  bool ok = false;
  double li = 0.0, conf = 0.0;
  int tb = 0, cb = 0, mb = 0, pb = 0;
  int64_t n = 0;
};

__device__ void stats_push(const StatsCtx& s, const StatIn& in) {
  const int lane = threadIdx.x & 31;
  if (s.s_count) {
    const unsigned sv = __ballot_sync(FULL, in.sv);
    agg_count(s.s_count, in.n, sv, in.sv);
    const unsigned scm = __ballot_sync(FULL, in.sc);
    agg_count(s.s_correct, in.n, scm, in.sc);
  }
  const unsigned act = __ballot_sync(FULL, in.vf);
  if (act == 0) return;  // warp-uniform
  const unsigned okm = __ballot_sync(FULL, in.vf && in.ok);
  // Class: count, and the loss added in lane order into this warp's row.
  s.xd[lane] = in.li;
  __syncwarp();
  if (in.vf) {
    const unsigned peers = __match_any_sync(act, in.cls);
    if (lane == __ffs(peers) - 1) {
      double sum = 0.0;
      for (unsigned m = peers; m; m &= m - 1) sum += s.xd[__ffs(m) - 1];
      s.wrow[in.cls] += sum;
      atomicAdd(&s.class_count[in.cls], (ull)__popc(peers));
    }
  }
  __syncwarp();
  // Confidence bin: count, correct count, exact fixed-point sum of the confidence.
  {
    const double a = in.conf * 2097152.0;  // 2^21
    const double f0 = floor(a);
    const double r1 = (a - f0) * 2097152.0;
    const double f1 = floor(r1);
    const double f2 = floor((r1 - f1) * 2097152.0);
    s.xu[lane] = (unsigned)f0;
    s.xu[32 + lane] = (unsigned)f1;
    s.xu[64 + lane] = (unsigned)f2;
  }
  __syncwarp();
  if (in.vf) {
    const unsigned peers = __match_any_sync(act, in.cb);
    if (lane == __ffs(peers) - 1) {
      unsigned c0 = 0, c1 = 0, c2 = 0;  // < 32 * 2^21: no overflow
      for (unsigned m = peers; m; m &= m - 1) {
        const int l = __ffs(m) - 1;
        c0 += s.xu[l]; c1 += s.xu[32 + l]; c2 += s.xu[64 + l];
      }
      atomicAdd(&s.conf_hist[in.cb], (ull)__popc(peers));
      const unsigned nok = __popc(peers & okm);
      if (nok) atomicAdd(&s.conf_correct[in.cb], (ull)nok);
      if (c0) atomicAdd(&s.cfix[in.cb], (ull)c0);
      if (c1) atomicAdd(&s.cfix[s.bins + in.cb], (ull)c1);
      if (c2) atomicAdd(&s.cfix[2 * s.bins + in.cb], (ull)c2);
    }
  }
  __syncwarp();
  agg_count(s.true_hist, in.tb, act, in.vf);
  agg_count(s.margin_hist, in.mb, act, in.vf);
  if (s.prob_hist) agg_count(s.prob_hist, in.pb, act, in.vf);
  agg_count(s.confusion, (long long)in.cls * s.conf_stride + in.pred, act, in.vf);
  if (s.s_inter) {
    const long long kt = (long long)in.n * s.Cs + in.cls, kp = (long long)in.n * s.Cs + in.pred;
    const bool hit = in.vf && in.ok;
    agg_count(s.s_true, kt, act, in.vf);
    agg_count(s.s_pred, kp, act, in.vf);
    agg_count(s.s_inter, kt, okm, hit);
  }
}

// ---------------------------------------------------------------------------------------------
// Kernel parameters (built by the launchers).
struct CEK {
  const void* x; int xdt;
  const void* t; int tdt; bool soft;
  int64_t C, inner, E, S;
  bool rows;
  const double* w; const double* Wp;   // class weights, their sum (device) or null
  int64_t ignore; double eps;
  bool loss, grad, stats, rank, per_sample;
  int nk; int64_t ks[8];
  const double* gsp; double gs;         // gradient scale: *gsp if set, else gs
  void* g; void* loss_out; bool lo64; double* elem_loss;
  int bins;
  ull* err;
  double* tile_part;                    // [n_tiles][NS]
  long long* iblk;                      // [G][kNI]
  double* cls_part;                     // [G][C]
  double* grows;                        // [G][NW][C] when the class rows do not fit in shared memory
  int64_t T, n_tiles, tpb;              // tile size, tiles, tiles per block
  ull* confusion; ull* hist;            // hist: class_count[C], then 7*bins (see Layout)
  ull* s_count; ull* s_correct; ull* s_inter; ull* s_true; ull* s_pred;
  int sm_stage, sm_red, sm_xch, sm_rows, sm_conf, sm_hist;  // byte offsets, -1: not in smem
  int Cp;                               // staging row stride (odd)
};

template <class S, class F>
__device__ __forceinline__ void stage_rows_t(F* st, const S* X, int64_t g0, int cnt, int C, int Cp,
                                             int NT) {
  constexpr int U = 8;  // independent loads in flight per thread
  const int tid = threadIdx.x;
  int r = tid / C, c = tid - (tid / C) * C;
  const int qd = NT / C, rd = NT - qd * C;
  for (int k0 = tid; k0 < cnt; k0 += U * NT) {
    S v[U];
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (k0 + u * NT < cnt) v[u] = X[g0 + k0 + u * NT];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (k0 + u * NT < cnt) st[r * Cp + c] = (F)tof(v[u]);
      c += rd; r += qd;
      if (c >= C) { c -= C; ++r; }
    }
  }
}

template <class S, class F, int CR>
__device__ __forceinline__ void load_regs_t(F (&xr)[CR], const S* X, int64_t base, int64_t cs, int C) {
#pragma unroll
  for (int c = 0; c < CR; ++c)
    if (c < C) xr[c] = (F)tof(X[base + (int64_t)c * cs]);
}

// Calls body(c, src(c)) for this lane's classes in increasing order: all classes (G == 1) or
// c = lane, lane + 32, ... (G == 32). With a register cache (CR > 0, G == 1) the loop is fully
// unrolled so that xr[] stays in registers; otherwise the values are loaded U at a time before
// they are used, so each thread keeps U independent loads in flight (memory-level parallelism).
template <class F, int G, int CR, class Src, class Body>
__device__ __forceinline__ void for_classes(int C, int lane, const Src& src, const Body& body) {
  if constexpr (CR > 0) {
#pragma unroll
    for (int c = 0; c < CR; ++c)
      if (c < C) body(c, src(c));
  } else {
    constexpr int U = G == 1 ? 8 : 16;
    for (int c0 = G == 1 ? 0 : lane; c0 < C; c0 += G * U) {
      F v[U];
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (c0 + u * G < C) v[u] = src(c0 + u * G);
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (c0 + u * G < C) body(c0 + u * G, v[u]);
    }
  }
}

template <class F, int G, int CR>
__global__ void __launch_bounds__(G == 1 ? 256 : 128) ce_kernel(const CEK P) {
  constexpr int NT = G == 1 ? 256 : 128;
  constexpr int NW = NT / 32;
  constexpr int STEP = G == 1 ? NT : NW;  // elements per block step
  LD_DYN_SMEM(smem);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int C = (int)P.C;
  const int bins = P.bins;
  const bool owner = G == 1 || lane == 0;  // writes the element's results
  const bool smooth = P.eps != 0.0;
  const double W = P.Wp ? *P.Wp : (double)P.C;
  const double ome_d = 1.0 - P.eps, epsc_d = P.eps / (double)P.C;
  const F ome = (F)ome_d, epsc = (F)epsc_d, Wf = (F)W;
  const double gs = P.grad ? (P.gsp ? *P.gsp : P.gs) : 0.0;
  double* red = reinterpret_cast<double*>(smem + P.sm_red);

  StatsCtx sc{};
  if (P.stats) {
    ull* hist = P.sm_hist >= 0 ? reinterpret_cast<ull*>(smem + P.sm_hist) : P.hist;
    sc.class_count = hist; sc.true_hist = hist + C; sc.conf_hist = sc.true_hist + bins;
    sc.conf_correct = sc.conf_hist + bins; sc.margin_hist = sc.conf_correct + bins;
    sc.prob_hist = nullptr; sc.cfix = sc.margin_hist + 2 * bins;
    sc.confusion = P.sm_conf >= 0 ? reinterpret_cast<ull*>(smem + P.sm_conf) : P.confusion;
    sc.C = C; sc.bins = bins; sc.conf_stride = C;
    double* rows0 = P.sm_rows >= 0 ? reinterpret_cast<double*>(smem + P.sm_rows)
                                   : P.grows + (int64_t)blockIdx.x * NW * C;
    sc.wrow = rows0 + (int64_t)warp * C;
    sc.xd = reinterpret_cast<double*>(smem + P.sm_xch + warp * kXchBytes);
    sc.xu = reinterpret_cast<unsigned*>(sc.xd);
    if (P.per_sample) {
      sc.s_count = P.s_count; sc.s_correct = P.s_correct; sc.s_inter = P.s_inter;
      sc.s_true = P.s_true; sc.s_pred = P.s_pred; sc.Cs = P.C;
    }
    if (P.sm_hist >= 0)
      for (int k = tid; k < C + 8 * bins; k += NT) hist[k] = 0;
    if (P.sm_conf >= 0)
      for (int k = tid; k < C * C; k += NT) sc.confusion[k] = 0;
    for (int64_t k = tid; k < (int64_t)NW * C; k += NT) rows0[k] = 0.0;
    __syncthreads();
  }

  long long cnt = 0, ign = 0, nfv = 0, nfr = 0, below = 0;
  long long corr[8] = {0, 0, 0, 0, 0, 0, 0, 0};

  const int64_t t_begin = (int64_t)blockIdx.x * P.tpb;
  const int64_t t_end = t_begin + P.tpb < P.n_tiles ? t_begin + P.tpb : P.n_tiles;
  for (int64_t tile = t_begin; tile < t_end; ++tile) {
    const int64_t e0 = tile * P.T, e1 = e0 + P.T < P.E ? e0 + P.T : P.E;
    double acc[NS] = {0.0, 0.0, 0.0, 0.0, 0.0};  // nll, smooth, wsum, true_prob, entropy
    for (int64_t s0 = e0; s0 < e1; s0 += STEP) {  // block-uniform loop
      const int64_t e = s0 + (G == 1 ? tid : warp);
      const bool in = e < e1;
      F xr[CR > 0 ? CR : 1];
      // Rows with a register cache: this step's rows are staged through shared memory (coalesced
      // loads; the gradient goes back the same way), each thread then owns one row.
      F* stg = nullptr;
      const int nrow = (int)(e1 - s0 < STEP ? e1 - s0 : STEP);
      if constexpr (CR > 0) {
        if (P.rows) {
          F* st = reinterpret_cast<F*>(smem + P.sm_stage);
          stg = st + tid * P.Cp;
          __syncthreads();
          if constexpr (std::is_same<F, float>::value) {
            if (P.xdt == X_F32) stage_rows_t(st, static_cast<const float*>(P.x), s0 * P.C, nrow * C, C, P.Cp, NT);
            else if (P.xdt == X_F16) stage_rows_t(st, static_cast<const __half*>(P.x), s0 * P.C, nrow * C, C, P.Cp, NT);
            else stage_rows_t(st, static_cast<const __nv_bfloat16*>(P.x), s0 * P.C, nrow * C, C, P.Cp, NT);
          } else {
            stage_rows_t(st, static_cast<const double*>(P.x), s0 * P.C, nrow * C, C, P.Cp, NT);
          }
          __syncthreads();
#pragma unroll
          for (int c = 0; c < CR; ++c)
            if (c < C) xr[c] = in ? st[tid * P.Cp + c] : F(0);
        }
      }

      StatIn si;
      if (in) {
        // Where this element's logits are.
        int64_t base, cs;
        if (P.rows) { base = e * P.C; cs = 1; }
        else {
          int64_t i;
          const int64_t o = divmod(e, P.inner, i);
          base = o * P.C * P.inner + i; cs = P.inner;
        }
        if constexpr (CR > 0) {
          if (!P.rows) {
            if constexpr (std::is_same<F, float>::value) {
              if (P.xdt == X_F32) load_regs_t<float, F, CR>(xr, static_cast<const float*>(P.x), base, cs, C);
              else if (P.xdt == X_F16) load_regs_t<__half, F, CR>(xr, static_cast<const __half*>(P.x), base, cs, C);
              else load_regs_t<__nv_bfloat16, F, CR>(xr, static_cast<const __nv_bfloat16*>(P.x), base, cs, C);
            } else {
              load_regs_t<double, F, CR>(xr, static_cast<const double*>(P.x), base, cs, C);
            }
          }
        }
        auto X = [&](int c) -> F {
          if constexpr (CR > 0) return xr[c];
          else return ldx<F>(P.x, base + (int64_t)c * cs, P.xdt);
        };
        auto TT = [&](int c) -> F { return ldx<F>(P.t, base + (int64_t)c * cs, P.tdt); };

        // Label (hard) or the target's first argmax (soft).
        int y = 0;
        bool valid = false, isig = false;
        if (!P.soft) {
          const int64_t yy = ldl(P.t, e, P.tdt);
          isig = is_ignored(yy, P.ignore, P.tdt);
          const bool bad = !isig && (yy < 0 || yy >= P.C);
          if (bad && owner) flag_bad(P.err, e);
          valid = !isig && !bad;
          y = valid ? (int)yy : 0;
        } else {
          F tb = ninf<F>();
          int ta = BIG;
          for_classes<F, G, 0>(C, lane, TT, [&](int c, F v) {
            if (ta == BIG ? !(v != v) : v > tb) { tb = v; ta = c; }
          });
          if (G > 1) warp_argmax(tb, ta);
          y = ta == BIG ? 0 : ta;
          valid = true;
        }

        // Pass 1: max and first argmax, runner-up over c != y, rank of the true class, a
        // non-finite detector (v - v is NaN for NaN and +-inf).
        F xy = 0;
        if (P.rank) {
          if constexpr (CR > 0) {
#pragma unroll
            for (int c = 0; c < CR; ++c)
              if (c == y) xy = xr[c];
          } else {
            xy = ldx<F>(P.x, base + (int64_t)y * cs, P.xdt);
          }
        }
        F m = ninf<F>(), m2 = ninf<F>(), fin = 0;
        int am = BIG, gt = 0;
        for_classes<F, G, CR>(C, lane, X, [&](int c, F v) {
          gt += (v > xy) | ((v == xy) & (c < y));
          fin += v - v;
          if (c != y && v > m2) m2 = v;
          if (v > m) { m = v; am = c; }
        });
        if (G > 1) {
          warp_argmax(m, am);
          m2 = warp_max(m2);
          fin = warp_sum(fin);
          gt = warp_sum(gt);
        }
        if (am == BIG) am = 0;
        int nf = 0, nn = 0;  // non-finite values, NaN values
        if (!(fin == F(0))) {  // rare: count them
          for_classes<F, G, CR>(C, lane, X, [&](int, F v) {
            nf += !(v - v == F(0));
            nn += v != v;
          });
          if (G > 1) { nf = warp_sum(nf); nn = warp_sum(nn); }
        }

        double li = 0.0;
        F dy = 0, l1p = 0, inv = 0, sd = 0, A = 0;
        if (P.loss) {
          // Pass 2: sum of exp(x - max) without the first maximum's exact 1 (log1p keeps full
          // relative precision for confident predictions), smoothing / soft-target sums, and
          // sum e*d for the entropy.
          F se = 0, ties = 0, sm = 0, Bs = 0;
          for_classes<F, G, CR>(C, lane, X, [&](int c, F v) {
            const F d = v - m;
            const F ev = ex(d);
            const bool z = d == F(0);
            if (c == y) dy = d;
            se += z ? F(0) : ev;
            ties += z ? F(1) : F(0);
            const F wc = P.w ? (F)P.w[c] : F(1);
            if (P.soft) {
              const F tt = TT(c) * ome + epsc;
              const F wt = wc * tt;
              A += wt;
              Bs += wt * -d;
            } else if (smooth) {
              sm += wc * -d;
            }
            if (P.stats) sd = fma(ev, d, sd);
          });
          if (G > 1) {
            se = warp_sum(se); ties = warp_sum(ties); sm = warp_sum(sm);
            A = warp_sum(A); Bs = warp_sum(Bs); sd = warp_sum(sd);
            dy = __shfl_sync(FULL, dy, y & 31);
          }
          const F sp = se + (ties - F(1));
          inv = F(1) / (sp + F(1));
          l1p = lg1p(sp);
          double c_nll, c_sm = 0.0, c_w;
          if (!P.soft) {
            const double nll = (double)l1p - (double)dy;
            const double wy = P.w ? P.w[y] : 1.0;
            if (smooth) {
              const double smt = (double)sm + W * (double)l1p;
              li = ome_d * (wy * nll) + epsc_d * smt;
              c_sm = valid ? smt : 0.0;
            } else {
              li = wy * nll;
            }
            c_nll = valid ? wy * nll : 0.0;
            c_w = valid ? wy : 0.0;
            if (!valid) li = 0.0;
          } else {
            li = valid ? (double)Bs + (double)A * (double)l1p : 0.0;
            c_nll = li;
            c_w = valid ? 1.0 : 0.0;
          }
          if (owner) {
            acc[0] += c_nll; acc[1] += c_sm; acc[2] += c_w;
            if (P.loss_out) {
              if (P.lo64) static_cast<double*>(P.loss_out)[e] = li;
              else static_cast<float*>(P.loss_out)[e] = (float)li;
            }
            if (P.elem_loss) P.elem_loss[e] = li;
          }
        }

        if (P.grad) {
          F ca, cb;
          if (!P.soft) {
            const double wy = P.w ? P.w[y] : 1.0;
            ca = valid ? (F)(ome_d * wy * gs) : F(0);
            cb = valid ? (F)(epsc_d * gs) : F(0);
          } else {
            ca = valid ? (F)gs : F(0);
            cb = ca * A;
          }
          for_classes<F, G, CR>(C, lane, X, [&](int c, F v) {
            const F p = ex(v - m) * inv;
            const F wc = P.w ? (F)P.w[c] : F(1);
            F gv;
            if (!P.soft) {
              gv = ca * (p - (c == y ? F(1) : F(0)));
              if (smooth) gv = gv + cb * (Wf * p - wc);
            } else {
              const F tt = TT(c) * ome + epsc;
              gv = cb * p - ca * (wc * tt);
            }
            if (CR > 0 && stg) stg[c] = gv;
            else stx<F>(P.g, base + (int64_t)c * cs, P.xdt, gv);
          });
        }

        if (owner) {
          cnt += valid; ign += isig; nfv += nf; nfr += nf != 0;
#pragma unroll
          for (int k = 0; k < 8; ++k)
            if (k < P.nk) {
              const bool hit = P.ks[k] == 1 ? am == y : (int64_t)gt < P.ks[k];
              corr[k] += valid && nn == 0 && hit;  // NaN never wins; +-inf compare as usual
            }
        }

        if (P.stats && owner) {
          const bool vf = valid && nf == 0;
          si.vf = vf;
          si.sv = valid && P.per_sample;
          si.sc = si.sv && nn == 0 && am == y;
          if (P.per_sample) si.n = e / P.S;
          if (vf) {
            const F pt = ex(dy) * inv;
            const F ps = ex(m2 - m) * inv;
            const F en = l1p - sd * inv;
            const double pmax = (double)inv, ptrue = (double)pt;
            const bool ok = am == y;
            const double margin = ok ? ptrue - (double)ps : ptrue - pmax;
            si.cls = y; si.pred = am; si.ok = ok; si.li = li; si.conf = pmax;
            si.tb = bin_of(ptrue, bins); si.cb = bin_of(pmax, bins);
            si.mb = bin_of((margin + 1.0) * 0.5, bins);
            acc[3] += ptrue; acc[4] += (double)en;
            below += ptrue < INV_E;
          }
        }
      }
      if constexpr (CR > 0) {
        if (P.rows && P.grad) {  // coalesced store of the staged gradient rows
          const F* st = reinterpret_cast<const F*>(smem + P.sm_stage);
          __syncthreads();
          const int cntv = nrow * C, qd = NT / C, rd = NT - (NT / C) * C;
          int r = tid / C, c = tid - (tid / C) * C;
          for (int k = tid; k < cntv; k += NT) {
            stx<F>(P.g, s0 * P.C + k, P.xdt, st[r * P.Cp + c]);
            c += rd; r += qd;
            if (c >= C) { c -= C; ++r; }
          }
        }
      }
      if (P.stats) stats_push(sc, si);  // all lanes, converged
    }
    // This tile's float sums, in a fixed order.
    block_sum<NT, NS>(acc, red);
    if (tid == 0)
      for (int j = 0; j < NS; ++j) P.tile_part[tile * NS + j] = acc[j];
  }

  // Per-block integer partials.
  {
    long long v[kNI] = {cnt, ign, nfv, nfr, below, corr[0], corr[1], corr[2], corr[3], corr[4],
                        corr[5], corr[6], corr[7]};
    block_isum<NT, kNI>(v, reinterpret_cast<long long*>(red));
    if (tid == 0)
      for (int j = 0; j < kNI; ++j) P.iblk[(int64_t)blockIdx.x * kNI + j] = v[j];
  }
  if (P.stats) {
    __syncthreads();
    if (P.sm_hist >= 0) {
      const ull* h = reinterpret_cast<const ull*>(smem + P.sm_hist);
      for (int k = tid; k < C + 8 * bins; k += NT)
        if (h[k]) atomicAdd(&P.hist[k], h[k]);
    }
    if (P.sm_conf >= 0) {
      const ull* h = reinterpret_cast<const ull*>(smem + P.sm_conf);
      for (int k = tid; k < C * C; k += NT)
        if (h[k]) atomicAdd(&P.confusion[k], h[k]);
    }
    const double* rows0 = P.sm_rows >= 0 ? reinterpret_cast<const double*>(smem + P.sm_rows)
                                         : P.grows + (int64_t)blockIdx.x * NW * C;
    for (int c = tid; c < C; c += NT) {
      double s = rows0[c];
      for (int w = 1; w < NW; ++w) s += rows0[(int64_t)w * C + c];
      P.cls_part[(int64_t)blockIdx.x * C + c] = s;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// from_logits=False: probabilities with Keras semantics (normalise by the class sum, clip to
// [1e-7, 1 - 1e-7]; zero derivative outside the clip range). Loss and gradient only.
template <class F>
__global__ void __launch_bounds__(256) ce_prob_kernel(const CEK P) {
  constexpr int NT = 256;
  LD_DYN_SMEM(smem);
  double* red = reinterpret_cast<double*>(smem + P.sm_red);
  const int tid = threadIdx.x;
  const int C = (int)P.C;
  const double ome_d = 1.0 - P.eps, epsc_d = P.eps / (double)P.C;
  const F ome = (F)ome_d, epsc = (F)epsc_d;
  const F lo = F(1e-7), hi = F(1) - F(1e-7);
  const double gs = P.grad ? (P.gsp ? *P.gsp : P.gs) : 0.0;
  long long cnt = 0, ign = 0;
  const int64_t t_begin = (int64_t)blockIdx.x * P.tpb;
  const int64_t t_end = t_begin + P.tpb < P.n_tiles ? t_begin + P.tpb : P.n_tiles;
  for (int64_t tile = t_begin; tile < t_end; ++tile) {
    const int64_t e0 = tile * P.T, e1 = e0 + P.T < P.E ? e0 + P.T : P.E;
    double acc[NS] = {0.0, 0.0, 0.0, 0.0, 0.0};
    for (int64_t s0 = e0; s0 < e1; s0 += NT) {
      const int64_t e = s0 + tid;
      if (e >= e1) continue;
      int64_t base, cs;
      if (P.rows) { base = e * P.C; cs = 1; }
      else {
        int64_t i;
        const int64_t o = divmod(e, P.inner, i);
        base = o * P.C * P.inner + i; cs = P.inner;
      }
      auto X = [&](int c) -> F { return ldx<F>(P.x, base + (int64_t)c * cs, P.xdt); };
      auto TT = [&](int c) -> F { return ldx<F>(P.t, base + (int64_t)c * cs, P.tdt); };
      int y = 0;
      bool valid = true;
      if (!P.soft) {
        const int64_t yy = ldl(P.t, e, P.tdt);
        const bool isig = is_ignored(yy, P.ignore, P.tdt);
        ign += isig;
        const bool bad = !isig && (yy < 0 || yy >= P.C);
        if (bad) flag_bad(P.err, e);
        valid = !isig && !bad;
        y = valid ? (int)yy : 0;
      }
      const double wy = (!P.soft && P.w) ? P.w[y] : 1.0;
      const F wyf = (!P.soft && P.w) ? (F)P.w[y] : F(1);
      F ssum = 0;
      for (int c = 0; c < C; ++c) ssum += X(c);
      F lnll = 0, lsoft = 0, A = 0;
      for (int c = 0; c < C; ++c) {
        const F wc = P.w ? (F)P.w[c] : F(1);
        const F q = X(c) / ssum;
        const F qc = q < lo ? lo : (q > hi ? hi : q);
        const F nl = -lg(qc);
        const bool inr = q >= lo && q <= hi;
        F wt;
        if (P.soft) {
          wt = wc * (TT(c) * ome + epsc);
          lsoft += wt * nl;
        } else {
          const bool hot = c == y;
          lnll += hot ? nl : F(0);
          lsoft += wc * nl;
          wt = epsc * wc + (hot ? ome * wyf : F(0));
        }
        A += inr ? wt : F(0);
      }
      double li = 0.0;
      if (valid) {
        cnt += 1;
        if (P.soft) {
          li = (double)lsoft;
          acc[0] += li; acc[2] += 1.0;
        } else {
          acc[0] += wy * (double)lnll; acc[2] += wy; acc[1] += (double)lsoft;
          li = P.eps == 0.0 ? wy * (double)lnll : ome_d * wy * (double)lnll + epsc_d * (double)lsoft;
        }
      }
      if (P.loss_out) {
        if (P.lo64) static_cast<double*>(P.loss_out)[e] = li;
        else static_cast<float*>(P.loss_out)[e] = (float)li;
      }
      if (P.grad) {
        const F sc = valid ? (F)gs / ssum : F(0);
        for (int c = 0; c < C; ++c) {
          const F wc = P.w ? (F)P.w[c] : F(1);
          const F q = X(c) / ssum;
          const bool inr = q >= lo && q <= hi;
          F wt;
          if (P.soft) wt = wc * (TT(c) * ome + epsc);
          else wt = epsc * wc + (c == y ? ome * wyf : F(0));
          stx<F>(P.g, base + (int64_t)c * cs, P.xdt, sc * (A - (inr ? wt / q : F(0))));
        }
      }
    }
    block_sum<NT, NS>(acc, red);
    if (tid == 0)
      for (int j = 0; j < NS; ++j) P.tile_part[tile * NS + j] = acc[j];
  }
  long long v[kNI] = {cnt, ign, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  block_isum<NT, kNI>(v, reinterpret_cast<long long*>(red));
  if (tid == 0)
    for (int j = 0; j < kNI; ++j) P.iblk[(int64_t)blockIdx.x * kNI + j] = v[j];
}

// ---------------------------------------------------------------------------------------------
// Binary cross-entropy, elementwise (one thread per element).
struct BK {
  const void* x; int xdt; const void* t; int tdt; bool tfloat;
  int64_t E;
  const double* pw; int64_t pw_len, pw_inner;
  bool probs, grad, stats;
  double threshold, gs;
  void* g; void* loss_out; bool lo64;
  int bins;
  ull* err;
  double* tile_part; long long* iblk; double* cls_part;
  int64_t T, n_tiles, tpb;
  ull* confusion; ull* hist;
  int sm_red, sm_xch, sm_rows, sm_conf, sm_hist;
};

template <class F>
__global__ void __launch_bounds__(256) bce_kernel(const BK P) {
  constexpr int NT = 256, NW = NT / 32;
  LD_DYN_SMEM(smem);
  double* red = reinterpret_cast<double*>(smem + P.sm_red);
  const int tid = threadIdx.x, warp = tid >> 5;
  const int bins = P.bins;
  StatsCtx sc{};
  double* rows0 = nullptr;
  if (P.stats) {
    ull* hist = reinterpret_cast<ull*>(smem + P.sm_hist);
    sc.class_count = hist; sc.true_hist = hist + 2; sc.conf_hist = sc.true_hist + bins;
    sc.conf_correct = sc.conf_hist + bins; sc.margin_hist = sc.conf_correct + bins;
    sc.prob_hist = sc.margin_hist + bins; sc.cfix = sc.prob_hist + bins;
    sc.confusion = reinterpret_cast<ull*>(smem + P.sm_conf);
    sc.C = 2; sc.bins = bins; sc.conf_stride = 2;
    rows0 = reinterpret_cast<double*>(smem + P.sm_rows);
    sc.wrow = rows0 + warp * 2;
    sc.xd = reinterpret_cast<double*>(smem + P.sm_xch + warp * kXchBytes);
    sc.xu = reinterpret_cast<unsigned*>(sc.xd);
    for (int k = tid; k < 2 + 8 * bins; k += NT) hist[k] = 0;
    if (tid < 4) sc.confusion[tid] = 0;
    if (tid < 2 * NW) rows0[tid] = 0.0;
    __syncthreads();
  }
  const F lo = F(1e-7), hi = F(1) - F(1e-7);
  const F sc_g = (F)P.gs;
  long long cnt = 0, nfv = 0, below = 0, correct = 0;
  const int64_t t_begin = (int64_t)blockIdx.x * P.tpb;
  const int64_t t_end = t_begin + P.tpb < P.n_tiles ? t_begin + P.tpb : P.n_tiles;
  for (int64_t tile = t_begin; tile < t_end; ++tile) {
    const int64_t e0 = tile * P.T, e1 = e0 + P.T < P.E ? e0 + P.T : P.E;
    double acc[NS] = {0.0, 0.0, 0.0, 0.0, 0.0};
    for (int64_t s0 = e0; s0 < e1; s0 += NT) {
      const int64_t e = s0 + tid;
      StatIn si;
      if (e < e1) {
        const F x = ldx<F>(P.x, e, P.xdt);
        const F y = P.tfloat ? ldx<F>(P.t, e, P.tdt) : (F)ldl(P.t, e, P.tdt);
        F pw = F(1);
        if (P.pw) {
          int64_t r;
          const int64_t q = divmod(e, P.pw_inner, r);
          int64_t k;
          divmod(q, P.pw_len, k);
          pw = (F)P.pw[k];
        }
        if (!(y >= F(0) && y <= F(1))) flag_bad(P.err, e);
        F li, sg;
        if (!P.probs) {
          // (1-y) x + lw softplus(-x) as a sum of non-negative terms (no cancellation for
          // confident logits): x < 0 gives -x pw y, x >= 0 gives (1-y) x.
          const F ax = x < F(0) ? -x : x;
          const F exv = ex(-ax);
          const F l1 = lg1p(exv);
          const F lw = P.pw ? F(1) + (pw - F(1)) * y : F(1);
          const F lin = x < F(0) ? -x * pw * y : (F(1) - y) * x;
          li = lin + lw * l1;
          const F inv = F(1) / (F(1) + exv);
          sg = x >= F(0) ? inv : exv * inv;        // sigmoid(x)
          const F sn = x >= F(0) ? exv * inv : inv;  // sigmoid(-x), without 1 - sigmoid(x)
          if (P.grad) {
            // (1-y) - lw sigmoid(-x) == lw sigmoid(x) - pw y: the form without cancellation.
            const F gv = x < F(0) ? lw * sg - pw * y : (F(1) - y) - lw * sn;
            stx<F>(P.g, e, P.xdt, sc_g * gv);
          }
        } else {
          const F p = x < lo ? lo : (x > hi ? hi : x);
          li = -(pw * y * lg(p) + (F(1) - y) * lg(F(1) - p));
          li = x == x ? li : x;
          sg = x;
          if (P.grad) {
            const bool inr = x >= lo && x <= hi;
            stx<F>(P.g, e, P.xdt, inr ? sc_g * (-(pw * y / p) + (F(1) - y) / (F(1) - p)) : F(0));
          }
        }
        acc[0] += (double)li;
        acc[2] += 1.0;
        if (P.loss_out) {
          if (P.lo64) static_cast<double*>(P.loss_out)[e] = (double)li;
          else static_cast<float*>(P.loss_out)[e] = (float)li;
        }
        const bool fin = x - x == F(0);
        const bool yt = y >= F(0.5), pr = (double)x > P.threshold;
        cnt += 1;
        nfv += !fin;
        correct += !(x != x) && yt == pr;  // NaN: wrong; +-inf compare as usual
        if (P.stats && fin) {
          const double p = (double)sg, pt = yt ? p : 1.0 - p, conf = p > 0.5 ? p : 1.0 - p;
          si.vf = true;
          si.cls = yt; si.pred = pr; si.ok = yt == pr; si.li = (double)li; si.conf = conf;
          si.tb = bin_of(pt, bins); si.cb = bin_of(conf, bins); si.mb = si.tb;
          si.pb = bin_of(p, bins);
          acc[3] += pt;
          below += pt < INV_E;
          const double q = 1.0 - p;
          acc[4] += (p > 0 ? -p * log(p) : 0.0) + (q > 0 ? -q * log(q) : 0.0);
        }
      }
      if (P.stats) stats_push(sc, si);
    }
    block_sum<NT, NS>(acc, red);
    if (tid == 0)
      for (int j = 0; j < NS; ++j) P.tile_part[tile * NS + j] = acc[j];
  }
  long long v[kNI] = {cnt, 0, nfv, nfv, below, correct, 0, 0, 0, 0, 0, 0, 0};
  block_isum<NT, kNI>(v, reinterpret_cast<long long*>(red));
  if (tid == 0)
    for (int j = 0; j < kNI; ++j) P.iblk[(int64_t)blockIdx.x * kNI + j] = v[j];
  if (P.stats) {
    __syncthreads();
    const ull* h = reinterpret_cast<const ull*>(smem + P.sm_hist);
    for (int k = tid; k < 2 + 8 * bins; k += NT)
      if (h[k]) atomicAdd(&P.hist[k], h[k]);
    const ull* cf = reinterpret_cast<const ull*>(smem + P.sm_conf);
    if (tid < 4 && cf[tid]) atomicAdd(&P.confusion[tid], cf[tid]);
    if (tid < 2) {
      double s = rows0[tid];
      for (int w = 1; w < NW; ++w) s += rows0[w * 2 + tid];
      P.cls_part[(int64_t)blockIdx.x * 2 + tid] = s;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Small kernels: weights, label pre-pass, per-sample sums, finalize, derived results.

// Validates weights (finite, and >= 0 when nonneg) and sums them in a fixed order. One block.
__global__ void __launch_bounds__(256) weight_kernel(const double* w, int64_t n, bool nonneg,
                                                     ull* errw, double* wsum) {
  __shared__ double red[8];
  double s = 0.0;
  for (int64_t k = threadIdx.x; k < n; k += 256) {
    const double v = w[k];
    if (!isfinite(v) || (nonneg && v < 0.0)) flag_bad(errw, k);
    s += v;
  }
  double vv[1] = {s};
  block_sum<256, 1>(vv, red);
  if (threadIdx.x == 0) {
    if (wsum) *wsum = vv[0];
    const ull flag = errw[0];
    if (flag) errw[1] = (ull)__double_as_longlong(w[(int64_t)~flag]);
  }
}

// Label pre-pass of the gradient's "mean" normaliser: sum of weight[y] over non-ignored labels.
__global__ void __launch_bounds__(256) labels_kernel(const void* t, int tdt, int64_t E, int64_t C,
                                                     int64_t ignore, const double* w,
                                                     int64_t per_block, ull* err, double* part) {
  __shared__ double red[16];
  const int64_t b0 = (int64_t)blockIdx.x * per_block;
  const int64_t b1 = b0 + per_block < E ? b0 + per_block : E;
  double s = 0.0, n = 0.0;
  for (int64_t e = b0 + threadIdx.x; e < b1; e += 256) {
    const int64_t y = ldl(t, e, tdt);
    if (is_ignored(y, ignore, tdt)) continue;
    if (y < 0 || y >= C) { flag_bad(err, e); continue; }
    s += w ? w[y] : 1.0;
    n += 1.0;
  }
  double vv[2] = {s, n};
  block_sum<256, 2>(vv, red);
  if (threadIdx.x == 0) { part[2 * blockIdx.x] = vv[0]; part[2 * blockIdx.x + 1] = vv[1]; }
}

// 1 / sum(weight[y]); a zero sum over counted elements is 0/0: NaN gradients, as in PyTorch.
__global__ void labels_final_kernel(const double* part, int64_t n, double* gscale) {
  double s = 0.0, c = 0.0;
  for (int64_t k = threadIdx.x; k < n; k += 32) { s += part[2 * k]; c += part[2 * k + 1]; }
  s = warp_sum(s);
  c = warp_sum(c);
  if (threadIdx.x == 0)
    *gscale = s != 0.0 ? 1.0 / s : (c != 0.0 ? __longlong_as_double(0x7ff8000000000000LL) : 0.0);
}

// sample_loss_sum[n] = sum of the per-element losses of sample n, in a fixed order.
__global__ void __launch_bounds__(256) segsum_kernel(const double* v, int64_t S, double* out) {
  __shared__ double red[8];
  const int64_t n = blockIdx.x;
  double s = 0.0;
  for (int64_t j = threadIdx.x; j < S; j += 256) s += v[n * S + j];
  double vv[1] = {s};
  block_sum<256, 1>(vv, red);
  if (threadIdx.x == 0) out[n] = vv[0];
}

struct FinK {
  const double* tile_part; int64_t n_tiles;
  const long long* iblk; int64_t G;
  const double* cls_part; int C;   // C columns (0 without statistics)
  int bins;
  double* f; long long* i;
  int64_t f_class_loss, f_conf_sum, i_conf_fix;
};

// One warp per output column: the NS float columns (ordered sums over tiles), the kNI integer
// columns, the C class-loss columns (ordered sums over blocks), then the conf_sum bins.
__global__ void __launch_bounds__(256) finalize_kernel(const FinK P) {
  const int lane = threadIdx.x & 31;
  const int64_t col = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
  const int64_t nfix = (P.bins + 31) / 32;
  if (col < NS) {
    double s = 0.0;
    for (int64_t k = lane; k < P.n_tiles; k += 32) s += P.tile_part[k * NS + col];
    s = warp_sum(s);
    if (lane == 0) P.f[F_NLL + col] = s;
  } else if (col < NS + kNI) {
    const int j = (int)(col - NS);
    long long s = 0;
    for (int64_t b = lane; b < P.G; b += 32) s += P.iblk[b * kNI + j];
    s = warp_sum(s);
    if (lane == 0) P.i[j < 5 ? I_COUNT + j : I_CORRECT + (j - 5)] = s;
  } else if (col < NS + kNI + P.C) {
    const int64_t c = col - NS - kNI;
    double s = 0.0;
    for (int64_t b = lane; b < P.G; b += 32) s += P.cls_part[b * P.C + c];
    s = warp_sum(s);
    if (lane == 0) P.f[P.f_class_loss + c] = s;
  } else if (col < NS + kNI + P.C + nfix) {
    const int64_t b = (col - NS - kNI - P.C) * 32 + lane;
    if (b < P.bins) {
      const long long* fx = P.i + P.i_conf_fix;
      P.f[P.f_conf_sum + b] = (double)fx[b] * 4.76837158203125e-07          // 2^-21
                              + (double)fx[P.bins + b] * 2.2737367544323206e-13  // 2^-42
                              + (double)fx[2 * P.bins + b] * 1.0842021724855044e-19;  // 2^-63
    }
  }
}

struct DerK {
  double* f; long long* i;
  double eps; int64_t C, E;
  bool soft, binary; int reduction; int nk;
  const void* t; int tdt; bool tfloat;
};

// The derived scalars, with the exact operations of the CPU path (lossdiag/_validate.py
// mean_loss / sum_loss, in float64 without contraction).
__global__ void derive_kernel(const DerK P) {
  if (threadIdx.x != 0) return;
  const double nan = __longlong_as_double(0x7ff8000000000000LL);
  const double nll = P.f[F_NLL], sm = P.f[F_SMOOTH], ws = P.f[F_WSUM];
  double loss_sum, mean;
  if (P.soft || P.binary) {
    loss_sum = nll;
    mean = P.E ? __ddiv_rn(nll, (double)P.E) : nan;
  } else {
    loss_sum = P.eps == 0.0 ? nll
                            : __dadd_rn(__dmul_rn(1.0 - P.eps, nll),
                                        __dmul_rn(__ddiv_rn(P.eps, (double)P.C), sm));
    mean = ws != 0.0 ? __ddiv_rn(loss_sum, ws) : nan;
  }
  const bool bad = P.i[I_ERR] != 0 || P.i[I_ERRW] != 0;
  double red = P.reduction == RED_SUM ? loss_sum : mean;
  if (bad) { red = nan; mean = nan; }
  P.f[F_LOSS_SUM] = loss_sum;
  P.f[F_MEAN] = mean;
  P.f[F_LOSS] = red;
  const long long count = P.i[I_COUNT];
  for (int k = 0; k < P.nk; ++k)
    P.f[F_ACC + k] = count ? __ddiv_rn((double)P.i[I_CORRECT + k], (double)count) : nan;
  P.i[I_ELEMENTS] = P.E;
  if (P.i[I_ERR] != 0 && P.t) {
    const int64_t idx = (int64_t)~(ull)P.i[I_ERR];
    if (P.binary)  // BCE target: the value as float64 bits
      P.i[I_ERR_VAL] = __double_as_longlong(P.tfloat ? ldx<double>(P.t, idx, P.tdt)
                                                     : (double)ldl(P.t, idx, P.tdt));
    else           // class label, as is
      P.i[I_ERR_VAL] = (long long)ldl(P.t, idx, P.tdt);
  }
}

// Reads every byte once (the benchmark's read-bandwidth reference).
__global__ void __launch_bounds__(256) mem_read_kernel(const uint4* p, int64_t n, ull* out) {
  unsigned acc = 0;
  for (int64_t k = (int64_t)blockIdx.x * 256 + threadIdx.x; k < n; k += (int64_t)gridDim.x * 256) {
    const uint4 v = __ldcs(p + k);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) atomicAdd(out, 1ull);  // keeps the loads alive
}

// ---------------------------------------------------------------------------------------------
// Host side.
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    throw std::runtime_error(std::string("lossdiag CUDA: ") + what + ": " + cudaGetErrorName(e) +
                             " (" + cudaGetErrorString(e) + ")");
  }
}

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct SmemPlan {
  int off = 0;
  int take(int64_t bytes) {  // 16-byte aligned offset, or -1 if it does not fit the budget
    const int64_t o = (off + 15) / 16 * 16;
    if (o + bytes > kSmemBudget) return -1;
    off = (int)(o + bytes);
    return (int)o;
  }
};

int sm_count(int device) {
  int n = 0;
  check(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device), "device attribute");
  return n > 0 ? n : 1;
}

// Blocks: one resident wave (so no block waits for a slot), tiles spread evenly over them.
template <class K>
void grid_for(K kernel, int nt, int smem, int device, int64_t n_tiles, int64_t max_blocks,
              int64_t& G, int64_t& tpb) {
  if (n_tiles == 0) { G = 0; tpb = 1; return; }
  int per_sm = 0;
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, nt, smem), "occupancy");
  int64_t g0 = (int64_t)sm_count(device) * (per_sm > 0 ? per_sm : 1);
  g0 = std::min(g0, max_blocks);
  g0 = std::max<int64_t>(g0, 1);
  tpb = cdiv(n_tiles, g0);
  G = cdiv(n_tiles, tpb);
}

template <class F, int G, int CR>
void run_ce_kernel(CEK& K, const CEArgs& a, const Workspace& ws, cudaStream_t st, int64_t& Gb) {
  constexpr int NT = G == 1 ? 256 : 128;
  constexpr int NW = NT / 32;
  const int64_t C = a.C;
  SmemPlan sp;
  K.sm_stage = -1;
  if (CR > 0 && a.rows) {
    K.Cp = (int)(C | 1);
    K.sm_stage = sp.take((int64_t)NT * K.Cp * (int64_t)sizeof(F));
  }
  K.sm_red = sp.take((int64_t)NW * std::max(NS, kNI) * 8);
  K.sm_xch = K.sm_rows = K.sm_conf = K.sm_hist = -1;
  if (a.stats) {
    K.sm_xch = sp.take((int64_t)NW * kXchBytes);
    K.sm_rows = sp.take((int64_t)NW * C * 8);
    K.sm_conf = sp.take(C * C * 8);
    K.sm_hist = sp.take((C + 8 * (int64_t)a.bins) * 8);
  }
  if ((CR > 0 && a.rows && K.sm_stage < 0) || K.sm_red < 0 || (a.stats && K.sm_xch < 0))
    throw std::runtime_error("lossdiag CUDA: shared memory plan failed");
  const int smem = sp.off;
  auto kern = ce_kernel<F, G, CR>;
  int64_t max_blocks = 1 << 20;
  if (a.stats && K.sm_rows < 0)  // class rows in global memory: at most 64 MiB of them
    max_blocks = std::max<int64_t>(1, (int64_t(64) << 20) / (NW * C * 8));
  int64_t tpb;
  grid_for(kern, NT, smem, a.device, K.n_tiles, max_blocks, Gb, tpb);
  K.tpb = tpb;
  K.iblk = static_cast<long long*>(ws.get(std::max<int64_t>(Gb, 1) * kNI * 8));
  if (a.stats) {
    K.cls_part = static_cast<double*>(ws.get(std::max<int64_t>(Gb * C, 1) * 8));
    if (K.sm_rows < 0) K.grows = static_cast<double*>(ws.get(std::max<int64_t>(Gb * NW * C, 1) * 8));
  }
  if (Gb > 0) {
    LD_LAUNCH(kern, (unsigned)Gb, NT, smem, st)(K);
    check(cudaGetLastError(), "ce kernel launch");
  }
}

template <class F>
void run_ce_prob_kernel(CEK& K, const CEArgs& a, const Workspace& ws, cudaStream_t st, int64_t& Gb) {
  SmemPlan sp;
  K.sm_red = sp.take(8 * kNI * 8);
  int64_t tpb;
  grid_for(ce_prob_kernel<F>, 256, sp.off, a.device, K.n_tiles, 1 << 20, Gb, tpb);
  K.tpb = tpb;
  K.iblk = static_cast<long long*>(ws.get(std::max<int64_t>(Gb, 1) * kNI * 8));
  if (Gb > 0) {
    LD_LAUNCH(ce_prob_kernel<F>, (unsigned)Gb, 256, sp.off, st)(K);
    check(cudaGetLastError(), "ce prob kernel launch");
  }
}

void launch_tail(int device, cudaStream_t st, const double* tile_part, int64_t n_tiles,
                 const long long* iblk, int64_t G, const double* cls_part, int C, int bins,
                 double* f, int64_t* i, const Layout& L, const DerK& dk) {
  FinK fk;
  fk.tile_part = tile_part; fk.n_tiles = n_tiles; fk.iblk = iblk; fk.G = G;
  fk.cls_part = cls_part; fk.C = C; fk.bins = bins;
  fk.f = f; fk.i = reinterpret_cast<long long*>(i);
  fk.f_class_loss = L.f_class_loss; fk.f_conf_sum = L.f_conf_sum; fk.i_conf_fix = L.i_conf_fix;
  const int64_t cols = NS + kNI + C + (bins + 31) / 32;
  LD_LAUNCH(finalize_kernel, (unsigned)cdiv(cols, 8), 256, 0, st)(fk);
  check(cudaGetLastError(), "finalize kernel launch");
  LD_LAUNCH(derive_kernel, 1, 32, 0, st)(dk);
  check(cudaGetLastError(), "derive kernel launch");
  (void)device;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
void launch_ce(const CEArgs& a, const Workspace& ws) {
  check(cudaSetDevice(a.device), "set device");
  cudaStream_t st = reinterpret_cast<cudaStream_t>(a.stream);
  if (a.C < 1 || a.C > (int64_t(1) << 30)) throw std::invalid_argument("lossdiag CUDA: bad C");
  if (a.stats && a.bins < 1) throw std::invalid_argument("lossdiag CUDA: bins must be >= 1");
  if (a.nk > 8) throw std::invalid_argument("lossdiag CUDA: top_k: at most 8 values");
  const Layout L = layout(a.stats ? a.C : 0, a.stats ? a.bins : 0);
  ull* err = reinterpret_cast<ull*>(a.i + I_ERR);
  ull* errw = reinterpret_cast<ull*>(a.i + I_ERRW);

  CEK K{};
  K.x = a.x; K.xdt = a.xdt; K.t = a.t; K.tdt = a.tdt; K.soft = a.soft;
  K.C = a.C; K.inner = a.inner < 1 ? 1 : a.inner; K.E = a.E; K.S = a.S < 1 ? 1 : a.S;
  K.rows = a.rows; K.w = a.w; K.ignore = a.ignore; K.eps = a.eps;
  K.loss = a.loss || a.grad || a.stats; K.grad = a.grad && a.g; K.stats = a.stats;
  K.per_sample = a.stats && a.per_sample;
  K.nk = a.nk;
  K.rank = false;
  for (int k = 0; k < a.nk; ++k) { K.ks[k] = a.ks[k]; K.rank |= a.ks[k] > 1; }
  K.g = a.g; K.loss_out = a.loss_out; K.lo64 = a.xdt == X_F64;
  K.bins = a.bins; K.err = err;

  // Class weights: validated and summed on the device (errors are reported later, see _gpu.py).
  if (a.w) {
    double* Wp = static_cast<double*>(ws.get(8));
    LD_LAUNCH(weight_kernel, 1, 256, 0, st)(a.w, a.C, true, errw, Wp);
    check(cudaGetLastError(), "weight kernel launch");
    K.Wp = Wp;
  }
  // Gradient scale: 1/E for soft "mean", 1/sum(weight[y]) for hard "mean" (label pre-pass).
  K.gs = 1.0;
  if (K.grad && a.reduction == RED_MEAN && a.E > 0) {
    if (a.soft) {
      K.gs = 1.0 / (double)a.E;
    } else {
      const int64_t Gl = std::min<int64_t>(cdiv(a.E, 4096), 1024);
      const int64_t per = cdiv(a.E, Gl);
      double* part = static_cast<double*>(ws.get(Gl * 16 + 8));
      double* gsp = part + 2 * Gl;
      LD_LAUNCH(labels_kernel, (unsigned)Gl, 256, 0, st)(a.t, a.tdt, a.E, a.C, a.ignore, a.w, per, err, part);
      check(cudaGetLastError(), "labels kernel launch");
      LD_LAUNCH(labels_final_kernel, 1, 32, 0, st)(part, Gl, gsp);
      check(cudaGetLastError(), "labels final kernel launch");
      K.gsp = gsp;
    }
  }
  // Per-sample loss sums: per-element losses (float64), then ordered sums per sample.
  const bool ps = K.per_sample && a.N > 0;
  if (ps) {
    K.s_count = reinterpret_cast<ull*>(a.s_count); K.s_correct = reinterpret_cast<ull*>(a.s_correct);
    K.s_inter = reinterpret_cast<ull*>(a.s_inter); K.s_true = reinterpret_cast<ull*>(a.s_true);
    K.s_pred = reinterpret_cast<ull*>(a.s_pred);
    K.elem_loss = K.S == 1 ? a.s_loss : a.elem_loss;
  }
  if (a.stats) {
    K.confusion = reinterpret_cast<ull*>(a.i + L.i_confusion);
    K.hist = reinterpret_cast<ull*>(a.i + L.i_class_count);
  }

  // Tiles: the kernel variant and the tile size depend only on the shape and dtype.
  const bool dbl = a.xdt == X_F64;
  const int CR = dbl ? 16 : 32;
  const bool warp_rows = !a.probs && a.rows && a.C > CR;
  const int step = warp_rows ? 4 : 256;
  int64_t T = warp_rows ? 64 : 2048;
  if (cdiv(a.E, T) > (int64_t(1) << 20)) T = cdiv(cdiv(a.E, int64_t(1) << 20), step) * step;
  K.T = T;
  K.n_tiles = cdiv(a.E, T);
  K.tile_part = static_cast<double*>(ws.get(std::max<int64_t>(K.n_tiles, 1) * NS * 8));

  int64_t Gb = 0;
  if (a.probs) {
    if (dbl) run_ce_prob_kernel<double>(K, a, ws, st, Gb);
    else run_ce_prob_kernel<float>(K, a, ws, st, Gb);
  } else if (a.C <= CR) {
    if (dbl) run_ce_kernel<double, 1, 16>(K, a, ws, st, Gb);
    else run_ce_kernel<float, 1, 32>(K, a, ws, st, Gb);
  } else if (!a.rows) {
    if (dbl) run_ce_kernel<double, 1, 0>(K, a, ws, st, Gb);
    else run_ce_kernel<float, 1, 0>(K, a, ws, st, Gb);
  } else {
    if (dbl) run_ce_kernel<double, 32, 0>(K, a, ws, st, Gb);
    else run_ce_kernel<float, 32, 0>(K, a, ws, st, Gb);
  }
  if (ps && K.S > 1) {
    LD_LAUNCH(segsum_kernel, (unsigned)a.N, 256, 0, st)(a.elem_loss, K.S, a.s_loss);
    check(cudaGetLastError(), "segsum kernel launch");
  }
  DerK dk;
  dk.f = a.f; dk.i = reinterpret_cast<long long*>(a.i);
  dk.eps = a.eps; dk.C = a.C; dk.E = a.E; dk.soft = a.soft; dk.binary = false;
  dk.reduction = a.reduction; dk.nk = a.nk;
  dk.t = a.soft ? nullptr : a.t; dk.tdt = a.tdt; dk.tfloat = false;
  launch_tail(a.device, st, K.tile_part, K.n_tiles, K.iblk, Gb, K.cls_part,
              a.stats ? (int)a.C : 0, a.stats ? a.bins : 0, a.f, a.i, L, dk);
}

void launch_bce(const BCEArgs& a, const Workspace& ws) {
  check(cudaSetDevice(a.device), "set device");
  cudaStream_t st = reinterpret_cast<cudaStream_t>(a.stream);
  if (a.stats && a.bins < 1) throw std::invalid_argument("lossdiag CUDA: bins must be >= 1");
  const Layout L = layout(a.stats ? 2 : 0, a.stats ? a.bins : 0);
  ull* err = reinterpret_cast<ull*>(a.i + I_ERR);
  ull* errw = reinterpret_cast<ull*>(a.i + I_ERRW);
  BK K{};
  K.x = a.x; K.xdt = a.xdt; K.t = a.t; K.tdt = a.tdt; K.tfloat = a.tfloat; K.E = a.E;
  K.pw = a.pw; K.pw_len = a.pw_len < 1 ? 1 : a.pw_len; K.pw_inner = a.pw_inner < 1 ? 1 : a.pw_inner;
  K.probs = a.probs; K.grad = a.grad && a.g; K.stats = a.stats; K.threshold = a.threshold;
  K.gs = (a.reduction == RED_MEAN && a.E) ? 1.0 / (double)a.E : 1.0;
  K.g = a.g; K.loss_out = a.loss_out; K.lo64 = a.xdt == X_F64; K.bins = a.bins; K.err = err;
  if (a.pw) {
    LD_LAUNCH(weight_kernel, 1, 256, 0, st)(a.pw, K.pw_len, false, errw, nullptr);
    check(cudaGetLastError(), "pos_weight kernel launch");
  }
  K.T = 4096;
  if (cdiv(a.E, K.T) > (int64_t(1) << 20)) K.T = cdiv(cdiv(a.E, int64_t(1) << 20), 256) * 256;
  K.n_tiles = cdiv(a.E, K.T);
  K.tile_part = static_cast<double*>(ws.get(std::max<int64_t>(K.n_tiles, 1) * NS * 8));
  SmemPlan sp;
  K.sm_red = sp.take(8 * kNI * 8);
  K.sm_xch = K.sm_rows = K.sm_conf = K.sm_hist = -1;
  if (a.stats) {
    K.sm_xch = sp.take(8 * kXchBytes);
    K.sm_rows = sp.take(8 * 2 * 8);
    K.sm_conf = sp.take(4 * 8);
    K.sm_hist = sp.take((2 + 8 * (int64_t)a.bins) * 8);
    if (K.sm_hist < 0) throw std::invalid_argument("lossdiag CUDA: bins too large (at most ~5000)");
    K.confusion = reinterpret_cast<ull*>(a.i + L.i_confusion);
    K.hist = reinterpret_cast<ull*>(a.i + L.i_class_count);
  }
  int64_t Gb, tpb;
  if (a.xdt == X_F64) grid_for(bce_kernel<double>, 256, sp.off, a.device, K.n_tiles, 1 << 20, Gb, tpb);
  else grid_for(bce_kernel<float>, 256, sp.off, a.device, K.n_tiles, 1 << 20, Gb, tpb);
  K.tpb = tpb;
  K.iblk = static_cast<long long*>(ws.get(std::max<int64_t>(Gb, 1) * kNI * 8));
  if (a.stats) K.cls_part = static_cast<double*>(ws.get(std::max<int64_t>(Gb, 1) * 2 * 8));
  if (Gb > 0) {
    if (a.xdt == X_F64) LD_LAUNCH(bce_kernel<double>, (unsigned)Gb, 256, sp.off, st)(K);
    else LD_LAUNCH(bce_kernel<float>, (unsigned)Gb, 256, sp.off, st)(K);
    check(cudaGetLastError(), "bce kernel launch");
  }
  DerK dk;
  dk.f = a.f; dk.i = reinterpret_cast<long long*>(a.i);
  dk.eps = 0.0; dk.C = 2; dk.E = a.E; dk.soft = false; dk.binary = true;
  dk.reduction = a.reduction; dk.nk = 1;
  dk.t = a.t; dk.tdt = a.tdt; dk.tfloat = a.tfloat;
  launch_tail(a.device, st, K.tile_part, K.n_tiles, K.iblk, Gb, K.cls_part, a.stats ? 2 : 0,
              a.stats ? a.bins : 0, a.f, a.i, L, dk);
}

void launch_mem_read(int device, uintptr_t stream, const void* p, int64_t nbytes, uint64_t* out) {
  check(cudaSetDevice(device), "set device");
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  const int64_t n = nbytes / 16;
  if (n == 0) return;
  const int64_t blocks = std::min<int64_t>(cdiv(n, 256), (int64_t)sm_count(device) * 8);
  LD_LAUNCH(mem_read_kernel, (unsigned)blocks, 256, 0, st)(static_cast<const uint4*>(p), n,
                                                   reinterpret_cast<ull*>(out));
  check(cudaGetLastError(), "mem_read kernel launch");
}

}  // namespace ldcuda
