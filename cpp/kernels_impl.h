// The CPU kernels. Included inside namespace lossdiag::isa_<name> by isa_*.cpp, once per
// instruction set, after the system headers and simd_math.h. Everything here therefore has a
// distinct mangled name per ISA, so the linker cannot mix AVX-512 code into the baseline build.
//
// Layout model: logits are (N, C, inner) ("NCHW", class stride = inner, pixels contiguous) or
// (E, C) rows ("NC" and channels-last). Work is cut into *tiles* whose boundaries depend only on
// the shape, tiles are grouped into a fixed number of *slabs*, each slab is summed sequentially by
// one thread and slabs are combined in order: the result is bitwise identical for any thread count.
// Inside a tile, B consecutive elements form a block processed lane-wise (one SIMD lane per pixel
// or row), so each element's C logits are read once from memory and re-read from L1.
//
// The kernels are split into the files below, by concern, included here in this order (each
// relies on the ones before it).
#include "kernels/types.h"       // helpers, bf16, compute type, lanes, loading labels and targets
#include "kernels/tiling.h"      // tiles, slabs (deterministic sums), checked scratch, accumulators

// ---------------------------------------------------------------------------------------------
// Multi-class kernel.
// TOPK: rank counting for some k > 1; ARGMAX: the first-max index (top-1, confusion).
template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
struct CE {
  using F = typename ComputeT<S>::type;
  static constexpr int B = LanesT<F>::B;
  using VF = typename VecT<F>::V;
  using VI = typename VecT<F>::I;
  using IS = typename VecT<F>::IS;
  static constexpr int VN = VecT<F>::N;
  static_assert(B % VN == 0, "lanes must be a multiple of the vector width");

  template <class P> static LD_INLINE VF loadv(const P* p) {
    if constexpr (sizeof(P) == sizeof(F)) return vload<VF>(p);
    else { F t[VN]; for (int i = 0; i < VN; ++i) t[i] = (F)p[i]; return vload<VF>(t); }
  }
  template <class P> static LD_INLINE void storev(P* p, VF v) {
    if constexpr (sizeof(P) == sizeof(F)) vstore<VF>(p, v);
    else { F t[VN]; vstore<VF>(t, v); for (int i = 0; i < VN; ++i) p[i] = (P)t[i]; }
  }

  // The exp pass reads only the current block (which the max pass has just loaded), so without help
  // the next block's memory is only requested when its first pass starts. The hardware prefetchers
  // do not cover it: in NCHW a block reads C rows H*W apart (C streams, more than they follow), and
  // in the rows layouts the transposition stalls on each new block. So the exp pass prefetches two
  // blocks ahead, one slice per class: [base + c * stride, + len) bytes. Measured on a 2-core
  // Zen 4, cross_entropy (8, 21, 512, 512) NCHW: 16.5 -> ~12 ms; (65536, 1000): 40 -> 35 ms (with
  // the tiles below: 18 ms); NHWC (8, 512, 512, 21): ~20 -> ~18 ms. Prefetching in the max pass and
  // copying the block to a contiguous buffer were tried and did not help. Prefetches never fault,
  // so running past the end of the array is harmless.
  // A second prefetch, into L2 only (t1), `far` bytes further (NCHW: 8 blocks ahead; rows: up to
  // 4 blocks further, at most 64 KB), brings the lines out of memory early enough that the near
  // one finds them in L2 or L3. Measured on 2 Zen 4 cores (KVM), in-process alternation, 2
  // threads: NCHW (8, 21, 512, 512) cross_entropy -4 to -12 %, evaluate -1 to -8 % (on 4 KB
  // pages -5 % in one run, +3 % in another); (4, 150, 256, 256) evaluate -26 %; NHWC
  // (8, 512, 512, 21) cross_entropy -5 to -9 %, evaluate -15 to -20 %; (262144, 100) -9 to -11 %;
  // L2-resident and (65536, 1000) unchanged. Distances of 5 to 16 blocks (NCHW) or 2 to 8 (rows)
  // measured alike. The far prefetch alone, without the near one, was as fast in some runs and
  // 10-25 % slower than neither in others (probably: the class rows share L2 sets, so most of
  // what it brings is evicted to the shared L3 before use, and L3 does not always keep it).
  struct Prefetch {
    uintptr_t base = 0;  // an address, not a pointer: it may lie past the end of the array
    int64_t stride = 0, len = 0, far = 0;
    LD_INLINE void at(int64_t c) const {
      const char* p = (const char*)(base + (uintptr_t)(c * stride));
      for (int64_t q = 0; q < len; q += 64) __builtin_prefetch(p + q, 0, 3);
      if (far)
        for (int64_t q = 0; q < len; q += 64) __builtin_prefetch(p + far + q, 0, 2);
    }
  };

  // Rows layout, full block of float (or double) rows: B rows of C contiguous values into the
  // class-major lane buffer, VN x VN tiles transposed in registers (log2(VN) rounds of two-input
  // shuffles that swap off-diagonal sub-blocks). For large C the scalar transposition writes one
  // value per cache line of a buffer beyond L1; the tiles write whole lines (C = 1000: ~3x faster
  // on one core; at C <= 150 no gain, so it is used from kTileC classes).
  static constexpr int64_t kTileC = 256;
  template <int H, int... P> static constexpr VI tmask_lo(std::integer_sequence<int, P...>) { return VI{((P & H) ? VN + P - H : P)...}; }
  template <int H, int... P> static constexpr VI tmask_hi(std::integer_sequence<int, P...>) { return VI{((P & H) ? VN + P : P + H)...}; }
  template <int H> static LD_INLINE void tstage(VF* r) {
    if constexpr (H < VN) {
      constexpr VI lo = tmask_lo<H>(std::make_integer_sequence<int, VN>{});
      constexpr VI hi = tmask_hi<H>(std::make_integer_sequence<int, VN>{});
#pragma GCC unroll 16
      for (int i = 0; i < VN; ++i)
        if (!(i & H)) { const VF x = r[i], y = r[i + H]; r[i] = __builtin_shuffle(x, y, lo); r[i + H] = __builtin_shuffle(x, y, hi); }
    }
  }
  static LD_INLINE void rows_to_lanes(const F* X, int64_t C, F* xb) {
    for (int j0 = 0; j0 < B; j0 += VN)
      for (int64_t c0 = 0; c0 < C; c0 += VN) {
        const int w = (int)imin(VN, C - c0);
        VF r[VN];
        const F* s = X + j0 * C + c0;
        if (w == VN) { for (int i = 0; i < VN; ++i) r[i] = vload<VF>(s + i * C); }
        else for (int i = 0; i < VN; ++i) { r[i] = VF{}; __builtin_memcpy(&r[i], s + i * C, w * sizeof(F)); }
        tstage<8>(r); tstage<4>(r); tstage<2>(r); tstage<1>(r);
        for (int i = 0; i < w; ++i) vstore(xb + (c0 + i) * B + j0, r[i]);
      }
  }

  // x[y_j] for every lane (y_j = 0 for invalid lanes, so always in bounds).
  template <class P> static LD_INLINE void gather_target(const P* src, int64_t cs, const IS* y, F* out) {
#if LD_VW == 64 && defined(__AVX512F__)
    if constexpr (sizeof(P) == 4 && sizeof(F) == 4) {
      for (int j = 0; j < B; j += 8) {
        __m256i yy = _mm256_loadu_si256((const __m256i*)(y + j));
        __m512i idx = _mm512_add_epi64(_mm512_mullo_epi64(_mm512_cvtepi32_epi64(yy), _mm512_set1_epi64(cs)),
                                       _mm512_setr_epi64(j, j + 1, j + 2, j + 3, j + 4, j + 5, j + 6, j + 7));
        _mm256_storeu_ps(out + j, _mm512_i64gather_ps(idx, (const float*)src, 4));
      }
      return;
    }
#endif
    for (int j = 0; j < B; ++j) out[j] = (F)src[(int64_t)y[j] * cs + j];
  }

  struct Thread {
    F* xbuf; F* ebuf; F* tbuf;  // C*B each
    int64_t* conf;              // per-thread confusion (csub copies) or shared (atomic)
    bool conf_atomic;
    int csub;                   // copies of the per-thread confusion (1 or kSub)
    int64_t* ccount;            // per-thread class counts (atomic confusion only)
    // Pending statistics increments (flat indices, see stats()), applied kPend at a time: a long
    // run of increments is about twice as fast as 64 of them between the vector passes. `pi`
    // holds kCap indices per stream (true/joint bin, confidence, margin, class loss, confusion,
    // confidence sum), at fixed offsets so that the flush loop runs on one induction variable.
    // The common case (float logits, packed confidence counters, joint histogram) stores two
    // int64 streams of index pairs instead: 8 loads per element in the flush instead of 10 (it
    // is bound by the load ports; evaluate (8, 21, 512, 512) NCHW, 1 thread: ~4 % faster).
    int32_t* pi; double* p_loss;
    // Packed counters are unsigned: rows left out of the statistics add theirs (NaN bits
    // included) to a scratch slot, where a signed sum could overflow.
    uint64_t* p_pk; double* p_inv;  // packed confidence counter (PACK) or the confidence itself
    uint64_t* pack;                 // packed confidence counters of the pending run (PACK)
    int pn;
    bool defer;                    // statistics go through the pending buffers
    int64_t* loc;               // per-segment per-class counts (3*C) for per-sample stats
    Prefetch pf;                // what the exp pass of the current block prefetches
    // Rows layout with a gradient: the block's gradient lanes go to gb[gcur] and are written
    // back to rows one block later (see segment()).
    F* gb[2] = {nullptr, nullptr};
    int gcur = 0;
    int64_t gpend = -1;  // first row of the block waiting in gb[gcur ^ 1], or -1
    int gpend_nb = 0;
    int32_t* gidx = nullptr;  // AVX-512 float: lane index of each value of B contiguous rows
  };

  const CEArgs& a;
  int64_t C;
  double W = 0;  // sum of class weights (C without weights)
  double one_m_eps, eps_c;
  Tiling tl;
  double* tile_part = nullptr;

  const bool WEIGHT;
  explicit CE(const CEArgs& a_) : a(a_), C(a_.C), WEIGHT(a_.w != nullptr) {
    if (WEIGHT) { for (int64_t c = 0; c < C; ++c) W += a.w[c]; } else { W = (double)C; }
    one_m_eps = 1.0 - a.eps; eps_c = a.eps / (double)C;
    int lg = 0;
    while ((int64_t(1) << lg) < C && lg < 62) ++lg;
    psh = 23 + lg; csh = psh + kRunBits;
    pscale = __builtin_ldexp(1.0, psh); punit = __builtin_ldexp(1.0, -psh);
  }

  // Lane-wise state of one block.
  struct Lane {
    IS y[B]; IS valid[B];  // valid: 0/1
    IS ties[B];
    F m[B], xy[B], dy[B], s[B], sm[B], sd[B], m2[B], inv[B], l1p[B], fin[B];
    // Soft targets: sum_c w_c t'_c and sum_c w_c t'_c (max - x_c) in float64 (in float32 the small
    // terms of a long row were lost next to a large one: relative error 1e-4 at C = 5000).
    // (One slot without soft targets: the record stays as small as before.)
    double A[SOFT ? B : 1], Bs[SOFT ? B : 1];
    IS am[B], gt[B]; int32_t nf[B], nn[B];  // non-finite and NaN counts
    double loss[B];
  };

  // Segment accumulators: per-lane sums combined in lane order at the end of the segment.
  struct SegAcc {
    alignas(64) double nll[B], smooth[B], w[B], lsum[B], tp[B], ent[B];
    void zero() {
      for (int j = 0; j < B; ++j) { nll[j] = 0; smooth[j] = 0; w[j] = 0; lsum[j] = 0; tp[j] = 0; ent[j] = 0; }
    }
  };
  static constexpr int kSub = 4;  // copies of the statistics (see SlabStore)
  static constexpr int64_t kSumRun = 128;  // classes per float partial sum (see pass 2)
  static constexpr int kPend = 2048;
  static constexpr int kCap = kPend + B;  // a run flushes once it reaches kPend
  static constexpr int kRunBits = 32 - __builtin_clz((unsigned)kCap);  // kCap < 2^kRunBits
  // Float logits: the confidence histogram's count and confidence sum share one int64 counter,
  // count << csh plus the confidence in fixed point (2^psh units), one increment per element
  // instead of two. Exact: a counted element's confidence 1/u has u in [1, C], so it is a float
  // >= 2^-ceil(log2 C) whose last mantissa bit is worth >= 2^-(23 + ceil(log2 C)) = 2^-psh, and
  // a run of < 2^kRunBits elements sums to < 2^(psh + kRunBits) = 2^csh. The counters are split
  // after each run (flush), so the sums and counts reach the slab exactly.
  static constexpr bool PACK = sizeof(F) == 4;
  int psh = 0, csh = 0;
  double pscale = 1, punit = 1;  // 2^psh, 2^-psh
  // Few bins: one joint (true-probability bin, margin bin) histogram, one increment less per
  // element (increments are bound by the store throughput); the marginals are summed at the end.
  bool joint() const { return a.bins <= 22; }

  // Labels of the block's nb elements into the lanes (padding lanes: label 0, not valid).
  LD_INLINE void hard_labels(Lane& ln, SlabAcc& sa, int nb, int64_t ebase) {
    // The rare bad label is located afterwards.
    int64_t ign = 0; bool anybad = false;
    labels_block<IS>(a.t, a.tdt, ebase, nb, a.ignore, C, ln.y, ln.valid, ign, anybad);
    for (int j = nb; j < B; ++j) { ln.y[j] = 0; ln.valid[j] = 0; }
    sa.r.ignored += ign;
    if (anybad) {
      int64_t lb[B];
      load_labels(a.t, a.tdt, ebase, nb, lb);
      for (int j = 0; j < nb; ++j)
        if ((lb[j] != a.ignore || (a.tdt == U64 && lb[j] < 0)) && (lb[j] < 0 || lb[j] >= C)) {
          merge_bad(sa.r, lb[j], ebase + j);
          break;
        }
    }
  }

  // Soft targets: A += w_c t'_c, Bs += w_c t'_c (-d) over VN lanes, in float64 (t' = t (1 - eps)
  // + eps / C). tv: the VN target values (compute type), d: x_c - max. LANES_ARE_CLASSES: the
  // lanes hold classes c..c+VN-1 (wide rows), else VN elements of class c.
  template <bool LANES_ARE_CLASSES = false>
  LD_INLINE void soft_acc(const F* tv, int64_t c, VF d, vd* A, vd* Bs) const {
    constexpr int DN = VecT<double>::N, NH = VN / DN;
    const VF t = vload<VF>(tv);
#pragma GCC unroll 4
    for (int h = 0; h < NH; ++h) {
      const vd wc = !WEIGHT ? vd{} + 1.0
                            : LANES_ARE_CLASSES ? vload<vd>(a.w + c + h * DN) : vd{} + a.w[c];
      const vd wt = wc * (to_d(t, h) * one_m_eps + eps_c);
      A[h] += wt;
      Bs[h] += wt * (vd{} - to_d(d, h));
    }
  }

  // Process one block of B lanes from a source with class stride cs (lane stride 1).
  template <class P>
  LD_INLINE void block(Thread& th, SlabAcc& sa, SegAcc& acc, const P* __restrict src, int64_t cs,
                       const F* __restrict tsrc, const int64_t* lab, int nb, int64_t ebase,
                       P* gdst, int64_t gcs) {
    if (nb < 1 || nb > B) __builtin_unreachable();  // (segment() passes 1..B; silences -Warray-bounds)
    Lane ln;
    const double* w = a.w;
    // Labels (hard) or the target's argmax (soft).
    if (!SOFT) {
      hard_labels(ln, sa, nb, ebase);
    } else {
      F tb[B];
      for (int j = 0; j < B; ++j) { tb[j] = tsrc[j]; ln.am[j] = 0; }
      for (int64_t c = 1; c < C; ++c)
        for (int j = 0; j < B; ++j) {
          F v = tsrc[c * B + j];
          bool g = v > tb[j];
          tb[j] = g ? v : tb[j]; ln.am[j] = g ? (IS)c : ln.am[j];
        }
      for (int j = 0; j < B; ++j) { ln.valid[j] = j < nb; ln.y[j] = ln.am[j]; }
      (void)lab;
    }
    // The true class's logit: picked out in the max pass, which waits on memory anyway (a gather
    // before it waits on C cache lines per block); top-k needs it before that pass.
    constexpr bool SELXY = LOSS && !TOPK;
    if (TOPK) gather_target(src, cs, ln.y, ln.xy);

    // Pass 1: max (and argmax, rank of the true class, a non-finite detector).
    for (int j = 0; j < B; ++j) { ln.nf[j] = 0; ln.nn[j] = 0; }
    // With STATS the exp pass finds the non-finite rows almost for free (see below). The argmax
    // and the runner-up logit are found here: this pass partly waits on memory (the class rows
    // share cache sets), the exp pass is busiest on the multiply-add units (the argmax here took
    // evaluate (8, 21, 512, 512) from ~17.7 to ~16.4 ms on 2 Zen 4 cores; the runner-up in the
    // exp pass, as an exp, left its 20 accumulators short of registers, and the entropy sums
    // went through the stack; the argmax there, as a masked store or as a blend reusing the
    // compare of the sum, measured slower: 13.1 vs 12.8 and 13.9 vs 13.5 ms).
    static_assert(!STATS || ARGMAX, "the statistics need the argmax");
    constexpr bool NF = (TOPK || ARGMAX) && !STATS;
    {
      constexpr int K = B / VN;
      VF m[K], fin[K], xy[K], m2[K];
      VI am[K], gt[K], y[K];
#pragma GCC unroll 8
      for (int k = 0; k < K; ++k) {
        m[k] = VF{} - __builtin_inf(); m2[k] = m[k]; fin[k] = VF{}; xy[k] = TOPK ? vload<VF>(ln.xy + k * VN) : VF{};
        am[k] = VI{}; gt[k] = VI{}; y[k] = vload<VI>(ln.y + k * VN);
      }
      const P* col = src;
      // Without an exp pass (accuracy) nothing else prefetches the next blocks: this pass does.
      const bool pf1 = !LOSS && th.pf.base != 0;
      for (int64_t c = 0; c < C; ++c, col += cs) {
        const VI cv = VI{} + (IS)c;
        if (pf1) th.pf.at(c);
#pragma GCC unroll 8
        for (int k = 0; k < K; ++k) {
          const VF v = loadv(col + k * VN);
          if (TOPK) gt[k] -= (v > xy[k]) | ((v == xy[k]) & (cv < y[k]));  // masks are -1
          if (NF) fin[k] += v - v;  // NaN iff some logit is NaN or +-inf
          if (SELXY) xy[k] = cv == y[k] ? v : xy[k];
          if (STATS) { const VF lo = v < m[k] ? v : m[k]; m2[k] = lo > m2[k] ? lo : m2[k]; }  // runner-up
          if (ARGMAX) { VI g = v > m[k]; am[k] = g ? cv : am[k]; m[k] = g ? v : m[k]; }
          else m[k] = v > m[k] ? v : m[k];
        }
      }
#pragma GCC unroll 8
      for (int k = 0; k < K; ++k) {
        vstore(ln.m + k * VN, m[k]); vstore(ln.fin + k * VN, fin[k]);
        if (SELXY) vstore(ln.xy + k * VN, xy[k]);
        vstore(ln.am + k * VN, am[k]); vstore(ln.gt + k * VN, gt[k]);
        if (STATS) vstore(ln.m2 + k * VN, m2[k]);
      }
    }
    if (NF)
      for (int j = 0; j < nb; ++j)
        if (!(ln.fin[j] == F(0))) {  // rare: count the non-finite values of this element
          int32_t k = 0, q = 0;
          for (int64_t c = 0; c < C; ++c) { F v = (F)src[c * cs + j]; k += !(v - v == F(0)); q += v != v; }
          ln.nf[j] = k; ln.nn[j] = q;
        }

    if (LOSS) {
      // Pass 2: sum of exp(x - max), with the first maximum's exact 1 kept out of the sum so that
      // log1p keeps full relative precision for confident predictions.
      {
        constexpr int K = B / VN, DN = VecT<double>::N, NH = VN / DN;
        VF m[K], sv[K], sm[K], sd[K];
        vd A[SOFT ? K : 1][NH], Bs[SOFT ? K : 1][NH];
        VI ties[K];  // !STATS (with STATS, a tie is a rare row: runner-up == max)
#pragma GCC unroll 8
        for (int k = 0; k < K; ++k) {
          m[k] = vload<VF>(ln.m + k * VN);
          sv[k] = VF{}; ties[k] = VI{} + (STATS ? 1 : 0); sm[k] = VF{}; sd[k] = VF{};
          if constexpr (SOFT) for (int h = 0; h < NH; ++h) { A[k][h] = vd{}; Bs[k][h] = vd{}; }
        }
        // float: each lane sums at most kSumRun classes in float, then the partial sums go to
        // float64 (one float accumulator over C classes lost up to ~C/2 ulps: 5e-6 relative at
        // C = 4096, ten times torch). Rows of up to kSumRun classes keep their exact bits and the
        // loop of before.
        constexpr bool FLUSH = sizeof(F) == 4;
        const P* col = src;
        const bool pf = th.pf.base != 0;
        // One class of the block (a macro: the same body in the short-row and the long-row loop).
#define LD_PASS2_CLASS(c)                                                                         \
        {                                                                                         \
          const VF wc = VF{} + (WEIGHT ? (F)w[c] : F(1));                                         \
          if (pf) th.pf.at(c);                                                                    \
          _Pragma("GCC unroll 8")                                                                 \
          for (int k = 0; k < K; ++k) {                                                           \
            const VF d = loadv(col + k * VN) - m[k];                                              \
            /* The first maximum's exact 1 is counted in `ties`, not summed. Without a gradient   \
               the exp itself leaves it out (same bits; see vexp_neg_keep). */                    \
            VF e = VF{};                                                                          \
            if (GRAD) {                                                                           \
              e = vexp_neg(d);                                                                    \
              vstore(th.ebuf + c * B + k * VN, e);                                                \
              if (STATS) sum_nonzero_d(d, e, sv[k]);                                              \
              else sum_but_max(d, e, sv[k], ties[k]);                                             \
            } else if (STATS) {                                                                   \
              e = vexp_neg_nz(d);                                                                 \
              sv[k] += e;                                                                         \
            } else {                                                                              \
              sum_exp_but_max(d, sv[k], ties[k]);                                                 \
            }                                                                                     \
            if (SMOOTH && !SOFT) sm[k] += wc * (VF{} - d);                                        \
            if constexpr (SOFT) soft_acc(tsrc + c * B + k * VN, c, d, A[k], Bs[k]);              \
            if (STATS) sd[k] = vfma(e, d, sd[k]);  /* NaN in rows left out of the stats */       \
          }                                                                                       \
        }
        if (!FLUSH || C <= kSumRun) {
          for (int64_t c = 0; c < C; ++c, col += cs) LD_PASS2_CLASS(c)
#pragma GCC unroll 8
          for (int k = 0; k < K; ++k) {
            vstore(ln.s + k * VN, sv[k]); vstore(ln.sm + k * VN, sm[k]); vstore(ln.sd + k * VN, sd[k]);
          }
        } else {
          vd svd[K][NH], smd[K][NH], sdd[K][NH];
          for (int k = 0; k < K; ++k)
            for (int h = 0; h < NH; ++h) { svd[k][h] = vd{}; smd[k][h] = vd{}; sdd[k][h] = vd{}; }
          for (int64_t c0 = 0; c0 < C; c0 += kSumRun) {
            if (c0 > 0) {
#pragma GCC unroll 8
              for (int k = 0; k < K; ++k) {
                for (int h = 0; h < NH; ++h) {
                  svd[k][h] += to_d(sv[k], h);
                  if (SMOOTH && !SOFT) smd[k][h] += to_d(sm[k], h);
                  if (STATS) sdd[k][h] += to_d(sd[k], h);
                }
                sv[k] = VF{}; sm[k] = VF{}; sd[k] = VF{};
              }
            }
            const int64_t c1 = imin(C, c0 + kSumRun);
            for (int64_t c = c0; c < c1; ++c, col += cs) LD_PASS2_CLASS(c)
          }
          for (int k = 0; k < K; ++k)  // float64 totals, rounded once
            for (int h = 0; h < NH; ++h) {
              const vd ts = svd[k][h] + to_d(sv[k], h), tm = smd[k][h] + to_d(sm[k], h);
              const vd td = sdd[k][h] + to_d(sd[k], h);
              for (int i = 0; i < DN; ++i) {
                const int j = k * VN + h * DN + i;
                ln.s[j] = (F)ts[i]; ln.sm[j] = (F)tm[i]; ln.sd[j] = (F)td[i];
              }
            }
        }
#undef LD_PASS2_CLASS
#pragma GCC unroll 8
        for (int k = 0; k < K; ++k) {
          vstore(ln.ties + k * VN, ties[k]);
          if constexpr (SOFT)
            for (int h = 0; h < NH; ++h) { vstore(ln.A + k * VN + h * DN, A[k][h]); vstore(ln.Bs + k * VN + h * DN, Bs[k][h]); }
          vstore(ln.dy + k * VN, vload<VF>(ln.xy + k * VN) - m[k]);  // x_y - max
        }
        // Rare rows: a tied maximum (runner-up == maximum: the sum above left out every exact 1;
        // the first maximum is the argmax) or a non-finite logit, which makes sum e*d NaN or
        // infinite (NaN or +inf: d is NaN; -inf: 0 * -inf). Count the ties and the non-finite
        // values and find the first maximum as the accuracy rule defines it.
        if (STATS) {
          VI rare = VI{};
#pragma GCC unroll 8
          for (int k = 0; k < K; ++k) {
            const VF sdk = vload<VF>(ln.sd + k * VN);
            rare |= (vload<VF>(ln.m2 + k * VN) == m[k]) | ~(sdk - sdk == F(0));
          }
          if (vany(rare))
            for (int j = 0; j < nb; ++j)
              if (ln.m2[j] == ln.m[j] || !(ln.sd[j] - ln.sd[j] == F(0))) {
                int32_t k = 0, q = 0; IS amj = 0, nt = 0; F mx = -__builtin_inf();
                for (int64_t c = 0; c < C; ++c) {
                  F v = (F)src[c * cs + j];
                  k += !(v - v == F(0)); q += v != v; nt += v - ln.m[j] == F(0);
                  if (v > mx) { mx = v; amj = (IS)c; }
                }
                ln.nf[j] = k; ln.nn[j] = q; ln.am[j] = amj; ln.ties[j] = nt;
                // Finite logits spanning more than the float range: some x_c - max overflowed to
                // -inf, and its 0 * -inf made the entropy sum NaN; such a class has probability
                // exactly 0 and adds nothing.
                if (k == 0 && !(ln.sd[j] - ln.sd[j] == F(0))) {
                  F sdj = 0;
                  for (int64_t c = 0; c < C; ++c) {
                    const F d = (F)src[c * cs + j] - ln.m[j];
                    const F e = vexp_neg(VF{} + d)[0];  // the bits of the vector pass
                    sdj += e != F(0) ? e * d : F(0);
                  }
                  ln.sd[j] = sdj;
                }
              }
        }
      }
    }
    finish<false>(th, sa, acc, ln, nb, ebase, tsrc, gdst, gcs);
  }

  // Loss, gradient (lane form, or per element for the wide rows), statistics and counting of one
  // block whose Lane record is complete.
  template <bool WIDE, class P>
  LD_INLINE void finish(Thread& th, SlabAcc& sa, SegAcc& acc, Lane& ln, int nb, int64_t ebase,
                        const F* __restrict tsrc, P* gdst, int64_t gcs) {
    const double* w = a.w;
    if (LOSS) {
      for (int j = 0; j < B; ++j) {
        // log1p(sp) = log(u) - ((u - 1) - sp) / u, sharing 1/u with the softmax normaliser.
        const F sp = ln.s[j] + (F)(ln.ties[j] - 1);
        const F u = sp + F(1);
        const F inv = F(1) / u;
        ln.inv[j] = inv;
        ln.l1p[j] = ld_log(u) - ((u - F(1)) - sp) * inv;
      }
      // Per-element losses in double (deferred statistics: straight into the pending records).
      double* const lout = STATS && th.defer ? th.p_loss + th.pn : ln.loss;
      for (int j = 0; j < B; ++j) {
        double li;
        if constexpr (!SOFT) {
          double nll = (double)ln.l1p[j] - (double)ln.dy[j];
          double wy = WEIGHT ? w[ln.y[j]] : 1.0;
          bool v = ln.valid[j];
          acc.nll[j] += v ? wy * nll : 0.0;
          acc.w[j] += v ? wy : 0.0;
          if (SMOOTH) {
            double sm = (double)ln.sm[j] + W * (double)ln.l1p[j];
            acc.smooth[j] += v ? sm : 0.0;
            li = one_m_eps * (wy * nll) + eps_c * sm;
          } else {
            li = wy * nll;
          }
          li = v ? li : 0.0;
        } else {
          li = (double)ln.Bs[j] + (double)ln.A[j] * (double)ln.l1p[j];
          li = ln.valid[j] ? li : 0.0;
          acc.nll[j] += li;
          acc.w[j] += ln.valid[j] ? 1.0 : 0.0;
        }
        lout[j] = li;
        acc.lsum[j] += li;
      }
      if (a.loss_out) {
        if (a.xdt == F64) { double* o = (double*)a.loss_out + ebase; for (int j = 0; j < nb; ++j) o[j] = lout[j]; }
        else { float* o = (float*)a.loss_out + ebase; for (int j = 0; j < nb; ++j) o[j] = (float)lout[j]; }
      }
    }

    if (GRAD) {
      F ca[B], cb[B];
      for (int j = 0; j < B; ++j) {
        if constexpr (!SOFT) {
          double wy = WEIGHT ? w[ln.y[j]] : 1.0;
          ca[j] = ln.valid[j] ? (F)(one_m_eps * wy * a.gscale) : F(0);
          cb[j] = ln.valid[j] ? (F)(eps_c * a.gscale) : F(0);
        } else {
          ca[j] = ln.valid[j] ? (F)a.gscale : F(0);
          cb[j] = (F)((double)ca[j] * ln.A[j]);
        }
      }
      if constexpr (WIDE) {
        wide_grad(ln, ca, cb, nb, ebase);
      } else {
        const F Wf = (F)W;
        constexpr int K = B / VN;
        VF inv[K], cav[K], cbv[K]; VI y[K];
#pragma GCC unroll 8
        for (int k = 0; k < K; ++k) {
          inv[k] = vload<VF>(ln.inv + k * VN); cav[k] = vload<VF>(ca + k * VN);
          cbv[k] = vload<VF>(cb + k * VN); y[k] = vload<VI>(ln.y + k * VN);
        }
        for (int64_t c = 0; c < C; ++c) {
          const VF wc = VF{} + (WEIGHT ? (F)w[c] : F(1));
          const VI cv = VI{} + (IS)c;
#pragma GCC unroll 8
          for (int k = 0; k < K; ++k) {
            const VF p = vload<VF>(th.ebuf + c * B + k * VN) * inv[k];
            VF g;
            if (!SOFT) {
              const VF hot = cv == y[k] ? VF{} + F(1) : VF{};
              g = cav[k] * (p - hot);
              if (SMOOTH) g = g + cbv[k] * (Wf * p - wc);
            } else {
              const VF tt = vload<VF>(tsrc + c * B + k * VN) * (F)one_m_eps + (F)eps_c;
              g = cbv[k] * p - cav[k] * (wc * tt);
            }
            storev(gdst + c * gcs + k * VN, g);
          }
        }
      }
    }

    // Counting and statistics (with STATS, stats() counts on its vectors).
    int64_t hit1 = 0;
    if (STATS) {
      if (th.defer) hit1 = joint() ? stats<true, true>(th, sa, acc, ln, nb, ebase) : stats<true, false>(th, sa, acc, ln, nb, ebase);
      else hit1 = joint() ? stats<false, true>(th, sa, acc, ln, nb, ebase) : stats<false, false>(th, sa, acc, ln, nb, ebase);
    } else {
      int64_t cnt = 0;
      for (int j = 0; j < nb; ++j) cnt += ln.valid[j];
      sa.r.count += cnt;
      if (TOPK || ARGMAX) {
        int64_t nfv = 0, nfr = 0;
        for (int j = 0; j < nb; ++j) { nfv += ln.nf[j]; nfr += ln.nf[j] != 0; }
        sa.r.nonfinite += nfv; sa.r.nonfinite_rows += nfr;
      }
    }
    if (TOPK || ARGMAX)
      for (int k = 0; k < a.nk; ++k) {
        if (STATS && a.ks[k] == 1) { sa.r.correct[k] += hit1; continue; }
        int64_t hits = 0;
        const bool top1 = a.ks[k] == 1 && ARGMAX;
        for (int j = 0; j < nb; ++j) {
          const bool hit = top1 ? ln.am[j] == ln.y[j] : ln.gt[j] < a.ks[k];
          hits += ln.valid[j] & (ln.nn[j] == 0) & hit;  // NaN never wins; +-inf compare as usual
        }
        sa.r.correct[k] += hits;
      }
  }

  // ---- Wide rows ----------------------------------------------------------------------------
  // Above wide_min_classes() classes (2048; measured on 2 Zen 4 cores, 1 thread, wide/lane time:
  // cross_entropy 1.32 at C = 1024, 1.03 at 2048, 0.61 at 16384; its gradient 0.76, 0.43, 0.17)
  // the elements are taken one at a time, SIMD across the classes, instead of B elements side by
  // side: the lane buffers hold C * B values each (three
  // of them: 3 x 2e7 x 64 x 4 bytes per thread for C = 2e7), this path nothing that grows with C.
  // Pass 1 (max, first argmax, runner-up, rank, non-finite counts) and pass 2 (the exp sums) read
  // the element's logits twice, the gradient a third time; a row up to L2 size is re-read from
  // cache. The results fill the same Lane record as the lane passes, so the loss, statistics and
  // counting code (finish) is shared.
  bool wide = false;
  static constexpr int kWK = 4;  // independent vectors per step (latency of the max / sums)
  static constexpr int kWideRun = 16;  // steps per float partial sum (then float64)
  LD_INLINE int64_t elem_off(int64_t e) const {
    return a.rows ? e * C : (e / a.inner) * C * a.inner + e % a.inner;
  }
  template <class P> static LD_INLINE VF load_cls(const P* p, int64_t cs, int64_t c0) {
    if (cs == 1) return loadv(p + c0);
    F t[VN];
    for (int i = 0; i < VN; ++i) t[i] = (F)p[(c0 + i) * cs];
    return vload<VF>(t);
  }
  // VN classes from c0, the first n of them real: the others read as `pad`.
  template <class P> static LD_INLINE VF load_cls_tail(const P* p, int64_t cs, int64_t c0, int n, F pad) {
    F t[VN];
    for (int i = 0; i < VN; ++i) t[i] = i < n ? (F)p[(c0 + i) * cs] : pad;
    return vload<VF>(t);
  }
  // n soft-target values of one element from class c0 (float dtypes), zeros after them up to VN.
  LD_INLINE void load_t(int64_t off, int64_t cs, int64_t c0, int n, F* out) const {
    if (cs == 1) load_cvt<F>(a.t, a.tdt, true, off + c0, n, out, 1);
    else for (int i = 0; i < n; ++i) load_cvt<F>(a.t, a.tdt, true, off + (c0 + i) * cs, 1, out + i, 1);
    for (int i = n; i < VN; ++i) out[i] = F(0);
  }
  LD_INLINE VF load_w(int64_t c0, int n) const {
    F t[VN];
    for (int i = 0; i < VN; ++i) t[i] = i < n ? (F)a.w[c0 + i] : F(0);
    return vload<VF>(t);
  }

  // Fills lane j of ln from one element: logits p[c * cs], soft targets at toff + c * cs.
  __attribute__((noinline)) void wide_row(Lane& ln, int j, const S* __restrict p, int64_t cs, int64_t toff) {
    constexpr int K = kWK, DN = VecT<double>::N, NH = VN / DN;
    const int64_t step = (int64_t)K * VN, Cv = C / step * step;
    const F ninf = -__builtin_inf();
    if (SOFT) {  // the true class: the target's first argmax
      F tb = F(0); IS amt = 0;
      F buf[VN];
      for (int64_t c0 = 0; c0 < C; c0 += VN) {
        const int n = (int)imin(VN, C - c0);
        load_t(toff, cs, c0, n, buf);
        for (int i = 0; i < n; ++i) {
          if (c0 + i == 0) tb = buf[0];
          else if (buf[i] > tb) { tb = buf[i]; amt = (IS)(c0 + i); }
        }
      }
      ln.y[j] = amt;
    }
    const IS y = ln.y[j];
    const F xy = (F)p[(int64_t)y * cs];
    // Pass 1. Per vector lane as the lane path per element; then combined: the max, its first
    // index, the second largest value (a repeated max is its own runner-up).
    F m = ninf, m2 = ninf; int64_t am = 0, nf = 0, nn = 0, gt = 0;
    {
      VF vm[K], vm2[K];
      VI vam[K], vgt[K], vnf[K], vnn[K], iota;
      for (int i = 0; i < VN; ++i) iota[i] = (IS)i;
      const VF vxy = VF{} + xy;
      const VI vy = VI{} + y;
      for (int k = 0; k < K; ++k) {
        vm[k] = VF{} + ninf; vm2[k] = vm[k]; vam[k] = VI{}; vgt[k] = VI{}; vnf[k] = VI{}; vnn[k] = VI{};
      }
      for (int64_t c0 = 0; c0 < Cv; c0 += step) {
#pragma GCC unroll 4
        for (int k = 0; k < K; ++k) {
          const VF v = load_cls(p, cs, c0 + k * VN);
          const VI cv = iota + (IS)(c0 + k * VN);
          vnf[k] += (v - v == F(0)) + 1;  // masks are -1
          vnn[k] -= v != v;
          if (TOPK) vgt[k] -= (v > vxy) | ((v == vxy) & (cv < vy));
          if (STATS) { const VF lo = v < vm[k] ? v : vm[k]; vm2[k] = lo > vm2[k] ? lo : vm2[k]; }
          const VI g = v > vm[k];
          vam[k] = g ? cv : vam[k]; vm[k] = g ? v : vm[k];
        }
      }
      if (Cv) {
        int kb = 0, ib = 0;
        for (int k = 0; k < K; ++k)
          for (int i = 0; i < VN; ++i) {
            nf += vnf[k][i]; nn += vnn[k][i]; gt += vgt[k][i];
            const F v = vm[k][i];
            if (v > m || (v == m && (int64_t)vam[k][i] < am)) { m = v; am = vam[k][i]; kb = k; ib = i; }
          }
        for (int k = 0; k < K; ++k)
          for (int i = 0; i < VN; ++i) {
            m2 = vm2[k][i] > m2 ? vm2[k][i] : m2;
            if ((k != kb || i != ib) && vm[k][i] > m2) m2 = vm[k][i];
          }
      }
      for (int64_t c = Cv; c < C; ++c) {  // the rest, one by one, as the lane path
        const F v = (F)p[c * cs];
        nf += !(v - v == F(0)); nn += v != v;
        if (TOPK) gt += (v > xy) | ((v == xy) & (c < (int64_t)y));
        if (STATS) { const F lo = v < m ? v : m; m2 = lo > m2 ? lo : m2; }
        if (v > m) { m = v; am = c; }
      }
    }
    ln.m[j] = m; ln.m2[j] = m2; ln.am[j] = (IS)am; ln.xy[j] = xy; ln.dy[j] = xy - m;
    ln.gt[j] = (IS)gt; ln.nf[j] = (int32_t)nf; ln.nn[j] = (int32_t)nn;
    if (!LOSS) return;
    // Pass 2: the sums of pass 2 of the lane path (float sums in K * VN partial sums, combined
    // in double; soft-target sums in double throughout).
    double s = 0, sm = 0, sd = 0, A = 0, Bs = 0;
    int64_t ties = 0;
    {
      VF sv[K], smv[K], sdv[K];
      VI tv[K];
      vd Av[SOFT ? K : 1][NH], Bv[SOFT ? K : 1][NH];
      for (int k = 0; k < K; ++k) {
        sv[k] = VF{}; smv[k] = VF{}; sdv[k] = VF{}; tv[k] = VI{};
        if constexpr (SOFT) for (int h = 0; h < NH; ++h) { Av[k][h] = vd{}; Bv[k][h] = vd{}; }
      }
      const VF vmx = VF{} + m;
      auto body = [&](int k, int64_t c, VF v, int n) {
        const VF d = v - vmx;
        const VF e = vexp_neg(d);
        if (n == VN) {
          sum_but_max(d, e, sv[k], tv[k]);
          if (SMOOTH && !SOFT) smv[k] += (WEIGHT ? load_w(c, VN) : VF{} + F(1)) * (VF{} - d);
          if (STATS) sdv[k] = vfma(e, e != F(0) ? d : VF{}, sdv[k]);  // 0 * -inf: see rare rows
          if constexpr (SOFT) { F tb[VN]; load_t(toff, cs, c, VN, tb); soft_acc<true>(tb, c, d, Av[k], Bv[k]); }
          return;
        }
        // The last n < VN classes: same vector exp, lanes added one by one.
        F tb[VN];
        if (SOFT) load_t(toff, cs, c, n, tb);
        for (int i = 0; i < n; ++i) {
          const F di = d[i], ei = e[i];
          if (di == F(0)) ++ties; else s += (double)ei;
          const double wc = WEIGHT ? a.w[c + i] : 1.0;
          if (SMOOTH && !SOFT) sm += (double)((F)wc * (F(0) - di));
          if (STATS) sd += ei != F(0) ? (double)(ei * di) : 0.0;
          if (SOFT) {
            const double wt = wc * ((double)tb[i] * one_m_eps + eps_c);
            A += wt; Bs += wt * -(double)di;
          }
        }
      };
      // Float partial sums over kWideRun steps at most, then into float64 (as the lane path).
      auto flush = [&] {
        for (int k = 0; k < K; ++k) {
          for (int i = 0; i < VN; ++i) { s += (double)sv[k][i]; sm += (double)smv[k][i]; sd += (double)sdv[k][i]; }
          sv[k] = VF{}; smv[k] = VF{}; sdv[k] = VF{};
        }
      };
      for (int64_t c0 = 0, n = 0; c0 < Cv; c0 += step) {
#pragma GCC unroll 4
        for (int k = 0; k < K; ++k) body(k, c0 + k * VN, load_cls(p, cs, c0 + k * VN), VN);
        if (++n == kWideRun) { flush(); n = 0; }
      }
      for (int64_t c0 = Cv; c0 < C; c0 += VN) {
        const int n = (int)imin(VN, C - c0);
        body(0, c0, n == VN ? load_cls(p, cs, c0) : load_cls_tail(p, cs, c0, n, m), n);
      }
      flush();
      for (int k = 0; k < K; ++k) {
        for (int i = 0; i < VN; ++i) ties += tv[k][i];
        if constexpr (SOFT)
          for (int h = 0; h < NH; ++h)
            for (int i = 0; i < DN; ++i) { A += Av[k][h][i]; Bs += Bv[k][h][i]; }
      }
    }
    ln.s[j] = (F)s; ln.ties[j] = (IS)ties; ln.sm[j] = (F)sm; ln.sd[j] = (F)sd;
    if constexpr (SOFT) { ln.A[j] = A; ln.Bs[j] = Bs; }
  }

  // Gradient of the block's nb wide elements (ca, cb as in finish), recomputing exp(x - max).
  __attribute__((noinline)) void wide_grad(const Lane& ln, const F* ca, const F* cb, int nb, int64_t ebase) {
    const S* X = (const S*)a.x;
    S* G = (S*)a.g;
    const int64_t cs = a.rows ? 1 : a.inner;
    const F Wf = (F)W;
    VI iota;
    for (int i = 0; i < VN; ++i) iota[i] = (IS)i;
    for (int j = 0; j < nb; ++j) {
      const int64_t off = elem_off(ebase + j);
      const S* p = X + off;
      S* g = G + off;
      const VF inv = VF{} + ln.inv[j], mx = VF{} + ln.m[j], cav = VF{} + ca[j], cbv = VF{} + cb[j];
      const VI y = VI{} + ln.y[j];
      for (int64_t c0 = 0; c0 < C; c0 += VN) {
        const int n = (int)imin(VN, C - c0);
        const VF x = n == VN ? load_cls(p, cs, c0) : load_cls_tail(p, cs, c0, n, ln.m[j]);
        const VF pr = vexp_neg(x - mx) * inv;
        const VI cv = iota + (IS)c0;
        const VF wc = WEIGHT ? load_w(c0, n) : VF{} + F(1);
        VF gv;
        if (!SOFT) {
          const VF hot = cv == y ? VF{} + F(1) : VF{};
          gv = cav * (pr - hot);
          if (SMOOTH) gv = gv + cbv * (Wf * pr - wc);
        } else {
          F tb[VN];
          load_t(off, cs, c0, n, tb);
          const VF tt = vload<VF>(tb) * (F)one_m_eps + (F)eps_c;
          gv = cbv * pr - cav * (wc * tt);
        }
        if (cs == 1 && n == VN) storev(g + c0, gv);
        else for (int i = 0; i < n; ++i) g[(c0 + i) * cs] = (S)gv[i];
      }
    }
  }

  // One block of nb wide elements starting at element b0. Not inlined, nor are wide_row and
  // wide_grad: segment() keeps the lane path's code as it was.
  __attribute__((noinline)) void wide_block(Thread& th, SlabAcc& sa, SegAcc& acc, int64_t b0, int nb) {
    if (nb < 1 || nb > B) __builtin_unreachable();
    Lane ln;
    const S* X = (const S*)a.x;
    const int64_t cs = a.rows ? 1 : a.inner;
    if (!SOFT) hard_labels(ln, sa, nb, b0);
    else for (int j = 0; j < B; ++j) { ln.valid[j] = j < nb; ln.y[j] = 0; }
    for (int j = 0; j < nb; ++j) {
      const int64_t off = elem_off(b0 + j);
      wide_row(ln, j, X + off, cs, off);
    }
    for (int j = nb; j < B; ++j) {  // padding lanes: inert (not valid, not counted)
      ln.m[j] = F(0); ln.m2[j] = -__builtin_inf(); ln.am[j] = 0; ln.xy[j] = F(0); ln.dy[j] = F(0);
      ln.gt[j] = 0; ln.nf[j] = 0; ln.nn[j] = 0; ln.s[j] = F(0); ln.ties[j] = 1; ln.sm[j] = F(0);
      ln.sd[j] = F(0);
      if constexpr (SOFT) { ln.A[j] = 0; ln.Bs[j] = 0; }
    }
    finish<true>(th, sa, acc, ln, nb, b0, (const F*)nullptr, (S*)nullptr, 0);
  }

  // Apply the pending increments, in element order (the class loss sums do not depend on kPend;
  // the packed confidence sums are exact within a run and added to the slab once per run).
  LD_INLINE void flush(Thread& th, SlabAcc& sa) {
    int64_t* hs = sa.class_count; double* fs = sa.class_loss; int64_t* cm = th.conf;
    const int n = th.pn;
    th.pn = 0;
    const int32_t* pi = th.pi;
    const double* ploss = th.p_loss;
    const bool jn = joint();
    if constexpr (PACK) {
      uint64_t* pa = th.pack;
      const uint64_t* pk = th.p_pk;
      if (jn) {
        const uint64_t* qa = (const uint64_t*)pi;
        const uint64_t* qb = (const uint64_t*)(pi + 2 * kCap);
        for (int j = 0; j < n; ++j) {
          const uint64_t A = qa[j], Q = qb[j];
          fs[(uint32_t)Q] += ploss[j];
          hs[(uint32_t)A]++; pa[A >> 32] += pk[j]; cm[Q >> 32]++;
        }
      }
      else
        for (int j = 0; j < n; ++j) {
          fs[pi[3 * kCap + j]] += ploss[j];
          hs[pi[j]]++; pa[pi[kCap + j]] += pk[j]; hs[pi[2 * kCap + j]]++; cm[pi[4 * kCap + j]]++;
        }
      // Split the packed counters: counts to conf_hist, fixed-point sums (exact) to conf_sum.
      const int n2 = 2 * kSub * a.bins;
      const uint64_t low = (uint64_t(1) << csh) - 1;
      for (int i = 0; i < n2; ++i) {  // adding zeros is exact: no branch
        const uint64_t v = pa[i];
        pa[i] = 0;
        sa.conf_hist[i] += (int64_t)(v >> csh);
        sa.conf_sum[i >> 1] += (double)(v & low) * punit;
      }
      pa[n2] = 0;  // scratch slot of rows left out
    } else {
      const double* pinv = th.p_inv;
      for (int j = 0; j < n; ++j) {
        fs[pi[3 * kCap + j]] += ploss[j]; fs[pi[5 * kCap + j]] += pinv[j];
        hs[pi[j]]++; hs[pi[kCap + j]]++; cm[pi[4 * kCap + j]]++;
        if (!jn) hs[pi[2 * kCap + j]]++;
      }
    }
  }

  static LD_INLINE vd to_d(VF v, int h) {
    if constexpr (sizeof(F) == 8) { (void)h; return v; }
    else return cvt_half(v, h);
  }

  // Per-element statistics, VN lanes at a time. Everything except the increments themselves is
  // computed on vectors, including the flat index of every increment, so the per-element loop
  // (flush) is loads and adds only. DEFER: indices go to the pending buffers (per-thread
  // confusion, no per-sample statistics); JN: joint true-probability x margin histogram.
  // Not inlined: four variants per kernel, called once per block.
  // Also counts the block (counted elements, non-finite values and rows) into sa.r and returns
  // its top-1 hits by the accuracy rule.
  template <bool DEFER, bool JN>
  __attribute__((noinline)) int64_t stats(Thread& th, SlabAcc& sa, SegAcc& acc, Lane& ln, int nb, int64_t ebase) {
    constexpr int K = B / VN, DN = VecT<double>::N, NH = VN / DN;
    using v32 = std::conditional_t<sizeof(F) == 4, vi, vi_h>;  // int32 x VN
    auto c32 = [](VI v) { if constexpr (sizeof(IS) == 4) return v; else return __builtin_convertvector(v, v32); };
    auto ci = [](v32 v) { if constexpr (sizeof(IS) == 4) return (VI)v; else return __builtin_convertvector(v, VI); };
    const int bins = a.bins;
    const int32_t nbin = kSub * bins, Ci = (int32_t)C;
    const bool cm_fast = DEFER || !th.conf_atomic;  // then csub * C * C < 2^31 (see run())
    const int32_t CC = cm_fast ? (int32_t)(C * C) : 0;
    const VF fb = VF{} + (F)bins, hi = fb - F(1), half = fb * F(0.5);
    auto bin = [&](VF t) {  // (int)(t) clamped to [0, bins - 1], as bin_of(); NaN -> 0
      t = t > F(0) ? t : VF{};
      return __builtin_convertvector(t < hi ? t : hi, v32);
    };
    // Flat indices: into the slab's integers (base class_count), its doubles (base class_loss),
    // the thread's confusion, or (PACK, DEFER) the packed counters; rows left out of the
    // statistics point at the scratch slots.
    const v32 trash_i = v32{} + (int32_t)(C + 6 * nbin), trash_f = v32{} + (int32_t)(kSub * C + nbin);
    const v32 jbase = v32{} + (int32_t)(C + 6 * nbin + 1);
    const v32 trash_cm = v32{} + (cm_fast ? th.csub * CC : 0);
    alignas(64) int32_t l_t[B], l_c[B], l_m[B], l_l[B], l_f[B], l_cm[B], l_in[B];
    v32 zlo, zhi;  // interleave two index vectors
    for (int q = 0; q < VN; ++q) { zlo[q] = (q & 1) * VN + q / 2; zhi[q] = (q & 1) * VN + VN / 2 + q / 2; }
    int32_t* const pb = th.pi + th.pn;
    int32_t* const it = DEFER ? pb : l_t;
    int32_t* const ic = DEFER ? pb + kCap : l_c;
    int32_t* const im = DEFER ? pb + 2 * kCap : l_m;
    int32_t* const il = DEFER ? pb + 3 * kCap : l_l;
    int32_t* const icm = DEFER ? pb + 4 * kCap : l_cm;
    int32_t* const iff = DEFER ? pb + 5 * kCap : l_f;
    vd tp_s{}, en_s{};
    v32 n_cnt{}, n_nfv{}, n_nfr{}, n_hit{}, n_bl{};  // per-lane block counts (masks are -1)
    v32 sub0;  // copy of each lane (lane mod kSub): the same for every k when kSub divides VN
    for (int q = 0; q < VN; ++q) sub0[q] = q & (kSub - 1);
    // (double)p < 1/e exactly when p < the float nearest 1/e, which lies above it.
    static_assert((double)0.36787944117144233f > 0.36787944117144233, "float(1/e) rounds up");
    const F inv_e = sizeof(F) == 4 ? F(0.36787944117144233f) : F(0.36787944117144233);
#pragma GCC unroll 8
    for (int k = 0; k < K; ++k) {
      const int o = k * VN;
      v32 lane; VI laneI;
      for (int q = 0; q < VN; ++q) { lane[q] = o + q; laneI[q] = o + q; }
      const VF inv = vload<VF>(ln.inv + o);
      const VI yI = vload<VI>(ln.y + o), pI = vload<VI>(ln.am + o);
      const VI okI = yI == pI;
      // The true class's probability ptf and the largest of the other classes' qf, with one exp:
      // a right prediction has x_y = max (so exp(dy) = 1, ptf = 1/u) and qf is the runner-up's
      // (none when C == 1); a wrong one has the max among the others (qf = 1/u).
      const VF m2 = vload<VF>(ln.m2 + o);
      const VF ex = vexp_neg(okI ? m2 - vload<VF>(ln.m + o) : vload<VF>(ln.dy + o)) * inv;
      const VF ptf = okI ? inv : ex;
      const VF qf = okI ? (m2 > -__builtin_inf() ? ex : VF{}) : inv;
      const VF entf = vload<VF>(ln.l1p + o) - vload<VF>(ln.sd + o) * inv;
      const VI inI = (laneI < (IS)nb) & (vload<VI>(ln.valid + o) != 0) &
                     (ci(vload<v32>(ln.nf + o)) == 0);
      // Left-out lanes add 0 to the double sums (as before: +0.0 leaves every sum unchanged).
      const VF ptin = inI ? ptf : VF{}, enin = inI ? entf : VF{};
      const v32 y = c32(yI), p = c32(pI), ok = c32(okI), in = c32(inI);
      n_bl -= in & c32(ptf < inv_e);  // true-class probability below 1/e
      {
        const v32 nf = vload<v32>(ln.nf + o);  // 0 in padding lanes
        const v32 val = (lane < nb) & (c32(vload<VI>(ln.valid + o)) != 0);
        n_cnt -= val; n_nfv += nf; n_nfr -= nf != 0;
        n_hit -= val & (vload<v32>(ln.nn + o) == 0) & ok;  // NaN never wins; +-inf compare as usual
      }
#pragma GCC unroll 4
      for (int h = 0; h < NH; ++h) {
        tp_s += to_d(ptin, h);
        en_s += to_d(enin, h);
        if (DEFER) {
          const vd pm = to_d(inv, h);
          const int e = th.pn + o + h * DN;
          if constexpr (PACK) {
            // pm * 2^psh is an integer < 2^53; adding 2^52 puts it in the mantissa bits. (Rows
            // left out of the statistics add theirs to the scratch counter.)
            const vd big = vd{} + 4503599627370496.0;
            const vl one = vl{} + ((int64_t(1) << csh) - (int64_t)0x4330000000000000ll);
            vstore(th.p_pk + e, (vl)(pm * pscale + big) + one);
          } else {
            vstore(th.p_inv + e, pm);
          }
        }
      }
      // Bins in the compute type: the probabilities are only that precise (an element within
      // an ulp of a bin edge may land on either side, as against the float64 reference anyway).
      const v32 cbin = bin(inv * fb), tbin = bin(ptf * fb), mbin = bin((ptf - qf + F(1)) * half);
      // Flat indices: joint (JN) or true-probability histogram, confidence (packed when DEFER and
      // PACK: correct/incorrect in the low bit), class loss, confusion. Their lane-only parts
      // do not depend on k when kSub divides VN (computed once then).
      const v32 sub = VN % kSub == 0 ? sub0 : lane & (kSub - 1);
      const v32 sbb = jbase + sub * (bins * bins), sb2 = 2 * sub * bins, sbm = Ci + 4 * nbin + sub * bins;
      const v32 sbt = Ci + sub * bins, sbc = Ci + nbin + 2 * sub * bins, sbf = (int32_t)(kSub * C) + sub * bins;
      const v32 sci = sub * Ci, scm = (sub & (th.csub - 1)) * CC;
      const v32 yc = y * Ci;
      const v32 vt = in ? (JN ? sbb + tbin * bins + mbin : sbt + tbin) : trash_i;
      const v32 vc = DEFER && PACK ? (in ? sb2 + 2 * cbin - ok : v32{} + 2 * nbin)  // ok: -1
                                   : (in ? sbc + 2 * cbin - ok : trash_i);
      const v32 vl_ = in ? sci + y : trash_f;
      const v32 vcm = in ? scm + yc + p : trash_cm;
      if constexpr (DEFER && PACK && JN) {
        // (joint, confidence) and (class loss, confusion) index pairs, one int64 load each in
        // flush().
        int32_t* const qa = th.pi + 2 * (th.pn + o);
        int32_t* const qb = th.pi + 2 * kCap + 2 * (th.pn + o);
        vstore(qa, __builtin_shuffle(vt, vc, zlo)); vstore(qa + VN, __builtin_shuffle(vt, vc, zhi));
        vstore(qb, __builtin_shuffle(vl_, vcm, zlo)); vstore(qb + VN, __builtin_shuffle(vl_, vcm, zhi));
        continue;
      }
      vstore(it + o, vt);
      if (!JN) vstore(im + o, in ? sbm + mbin : trash_i);
      vstore(ic + o, vc);
      if (!(DEFER && PACK)) vstore(iff + o, in ? sbf + cbin : trash_f);
      vstore(il + o, vl_);
      if (cm_fast) vstore(icm + o, vcm);
      if (!DEFER) vstore(l_in + o, in);
    }
    vstore(acc.tp, vload<vd>(acc.tp) + tp_s);
    vstore(acc.ent, vload<vd>(acc.ent) + en_s);
    int64_t hits = 0;
    {
      int64_t cnt = 0, nfv = 0, nfr = 0, nbl = 0;
      for (int q = 0; q < VN; ++q) { cnt += n_cnt[q]; nfv += n_nfv[q]; nfr += n_nfr[q]; hits += n_hit[q]; nbl += n_bl[q]; }
      sa.r.count += cnt; sa.r.nonfinite += nfv; sa.r.nonfinite_rows += nfr; sa.r.below_inv_e += nbl;
    }
    if (DEFER) {
      th.pn += nb;
      if (th.pn >= kPend) flush(th, sa);
      return hits;
    }
    int64_t* hs = sa.class_count;
    double* fs = sa.class_loss;
    const bool ps_direct = a.per_sample && a.S == 1;
    for (int j = 0; j < nb; ++j) {
      const int64_t y = ln.y[j], p = ln.am[j];
      const bool ok = p == y;
      if (!l_in[j]) {
        // Left out of the statistics; still counted, and correct by the accuracy rule.
        const int64_t okk = ln.valid[j] && ln.nn[j] == 0 && ok;
        if (ps_direct) {
          int64_t n = ebase + j;
          a.s_loss[n] = ln.loss[j]; a.s_count[n] = ln.valid[j]; a.s_correct[n] = okk;
        } else if (a.per_sample) {
          th.loc[3 * C] += okk; th.loc[3 * C + 1] += ln.valid[j];
        }
        continue;
      }
      fs[l_l[j]] += ln.loss[j];
      fs[l_f[j]] += (double)ln.inv[j];
      hs[l_t[j]]++; hs[l_c[j]]++;
      if (!JN) hs[l_m[j]]++;
      if (cm_fast) th.conf[l_cm[j]]++;
      else { atomic_add(th.conf + y * C + p, 1); th.ccount[y]++; }
      if (a.per_sample) {
        if (ps_direct) {
          int64_t n = ebase + j;
          a.s_loss[n] = ln.loss[j]; a.s_count[n] = 1; a.s_correct[n] = ok;
          a.s_inter[n * C + y] += ok; a.s_true[n * C + y]++; a.s_pred[n * C + p]++;
        } else {
          th.loc[y] += ok; th.loc[C + y]++; th.loc[2 * C + p]++; th.loc[3 * C] += ok;
          th.loc[3 * C + 1]++;
        }
      }
    }
    return hits;
  }

  // Writes the pending block's gradient lanes (gb[gcur ^ 1]) to its rows.
  LD_INLINE void rows_out(Thread& th, S* G) {
    const F* g = th.gb[th.gcur ^ 1];
#if LD_VW == 64 && defined(__AVX512F__)
    // Whole vectors of the contiguous rows, each gathered from the lanes: one store per 16
    // values instead of 16 scalar stores to lines that have often left L1 (NHWC
    // (8, 512, 512, 21) float32 in place, 2 Zen 4 cores: 46 -> 39 ms).
    if constexpr (sizeof(S) == 4 && sizeof(F) == 4) {
      float* r = (float*)(G + th.gpend * C);
      const int64_t n = th.gpend_nb * C;
      int64_t q = 0;
      for (; q + 16 <= n; q += 16)
        _mm512_storeu_ps(r + q, _mm512_i32gather_ps(_mm512_loadu_si512(th.gidx + q), g, 4));
      if (q < n) {
        const __mmask16 m = (__mmask16)((1u << (n - q)) - 1);
        const __m512i ix = _mm512_maskz_loadu_epi32(m, th.gidx + q);
        _mm512_mask_storeu_ps(r + q, m, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, ix, g, 4));
      }
      th.gpend = -1;
      return;
    }
#endif
    for (int j = 0; j < th.gpend_nb; ++j) {
      S* r = G + (th.gpend + j) * C;
      for (int64_t c = 0; c < C; ++c) r[c] = (S)g[c * B + j];
    }
    th.gpend = -1;
  }

  // One segment [e0, e1): within one sample when S > 1, within one `o` for the NCHW layout.
  void segment(Thread& th, SlabAcc& sa, int64_t e0, int64_t e1, int64_t tile) {
    SegAcc acc; acc.zero();
    const S* X = (const S*)a.x;
    S* G = (S*)a.g;
    int64_t lb[1] = {0};
    const bool ps_seg = STATS && a.per_sample && a.S > 1;
    if (ps_seg) for (int64_t c = 0; c < 3 * C + 2; ++c) th.loc[c] = 0;
    for (int64_t b0 = e0; b0 < e1; b0 += B) {
      const int nb = (int)imin(B, e1 - b0);
      const int64_t* lab = lb;  // labels are read per block inside block()
      if (wide) {
        wide_block(th, sa, acc, b0, nb);
        continue;
      }
      if (!a.rows) {
        const int64_t o = b0 / a.inner, i0 = b0 % a.inner;
        const int64_t off = o * C * a.inner + i0;
        if (!SOFT && nb == B) {
          th.pf.base = (uintptr_t)(X + off) + 2 * B * sizeof(S);
          th.pf.stride = a.inner * (int64_t)sizeof(S); th.pf.len = B * (int64_t)sizeof(S);
          th.pf.far = 6 * B * (int64_t)sizeof(S);
          block<S>(th, sa, acc, X + off, a.inner, nullptr, lab, nb, b0, G ? G + off : nullptr, a.inner);
          continue;
        }
        // Tail block or soft targets: gather into lane buffers (padding lanes are inert).
        th.pf.base = 0;
        for (int64_t c = 0; c < C; ++c) {
          const S* r = X + off + c * a.inner;
          F* xb = th.xbuf + c * B;
          for (int j = 0; j < B; ++j) xb[j] = j < nb ? (F)r[j] : F(0);
          if (SOFT) {
            F* tb = th.tbuf + c * B;
            load_cvt<F>(a.t, a.tdt, true, off + c * a.inner, nb, tb, 1);
            for (int j = nb; j < B; ++j) tb[j] = F(0);
          }
        }
        block<F>(th, sa, acc, th.xbuf, B, th.tbuf, lab, nb, b0, GRAD ? th.xbuf : nullptr, B);
        if (GRAD)
          for (int64_t c = 0; c < C; ++c) {
            S* r = G + off + c * a.inner;
            const F* xb = th.xbuf + c * B;
            for (int j = 0; j < nb; ++j) r[j] = (S)xb[j];
          }
      } else {
        // Rows: transpose B rows of C into lanes; prefetch the block after next (see Prefetch).
        th.pf.base = (uintptr_t)(X + b0 * C) + 2 * B * C * sizeof(S);
        th.pf.stride = th.pf.len = B * (int64_t)sizeof(S);
        {
          const int64_t blk = B * C * (int64_t)sizeof(S);
          th.pf.far = imin(4, (int64_t(64) << 10) / blk) * blk;  // 0 when a block exceeds 64 KB
        }
        bool tiled = false;
        if constexpr (!SOFT && sizeof(S) == sizeof(F)) {
          if (nb == B && C >= kTileC) { rows_to_lanes((const F*)(X + b0 * C), C, th.xbuf); tiled = true; }
        }
        for (int j = 0; j < B && !tiled; ++j) {
          F* xb = th.xbuf + j;
          if (j < nb) {
            const S* r = X + (b0 + j) * C;
            for (int64_t c = 0; c < C; ++c) xb[c * B] = (F)r[c];
            if (SOFT) load_cvt<F>(a.t, a.tdt, true, (b0 + j) * C, (int)C, th.tbuf + j, B);
          } else {
            for (int64_t c = 0; c < C; ++c) xb[c * B] = F(0);
            if (SOFT) { F* tb = th.tbuf + j; for (int64_t c = 0; c < C; ++c) tb[c * B] = F(0); }
          }
        }
        // The previous block's gradient goes out here, after this block's transposition, so
        // its lanes are not read back right behind the vector stores that wrote them.
        if (GRAD && th.gpend >= 0) rows_out(th, G);
        block<F>(th, sa, acc, th.xbuf, B, th.tbuf, lab, nb, b0, GRAD ? th.gb[th.gcur] : nullptr, B);
        if (GRAD) { th.gpend = b0; th.gpend_nb = nb; th.gcur ^= 1; }
      }
    }
    if (GRAD && th.gpend >= 0) rows_out(th, G);
    double nll = 0, sm = 0, ws = 0, ls = 0;
    for (int j = 0; j < B; ++j) { nll += acc.nll[j]; sm += acc.smooth[j]; ws += acc.w[j]; ls += acc.lsum[j]; }
    sa.r.nll_sum += nll; sa.r.smooth_sum += sm; sa.r.wsum += ws;
    if (STATS) {
      if (th.pn) flush(th, sa);
      double tp = 0, en = 0;
      for (int j = 0; j < B; ++j) { tp += acc.tp[j]; en += acc.ent[j]; }
      sa.r.true_prob_sum += tp; sa.r.entropy_sum += en;
    }
    if (ps_seg) {
      const int64_t n = e0 / a.S;
      if (tl.within) tile_part[tile] = ls; else a.s_loss[n] = ls;
      for (int64_t c = 0; c < C; ++c) {
        if (th.loc[c]) atomic_add(a.s_inter + n * C + c, th.loc[c]);
        if (th.loc[C + c]) atomic_add(a.s_true + n * C + c, th.loc[C + c]);
        if (th.loc[2 * C + c]) atomic_add(a.s_pred + n * C + c, th.loc[2 * C + c]);
      }
      atomic_add(a.s_count + n, th.loc[3 * C + 1]);
      atomic_add(a.s_correct + n, th.loc[3 * C]);
    }
  }

  // Per-thread scratch; false when an allocation failed (noted in `fail`).
  bool thread_init(Thread& th, ThreadFail& fail, bool conf_atomic, int csub, int64_t cper,
                   int64_t* conf_all, Owned* own) {
    const int64_t buf = C * B;
    th.xbuf = th.ebuf = th.tbuf = nullptr;
    th.conf_atomic = conf_atomic;
    th.csub = csub;
    th.conf = STATS ? (conf_atomic ? a.confusion : conf_all + (int64_t)thread_id() * cper) : nullptr;
    th.loc = nullptr; th.ccount = nullptr;
    th.pi = nullptr; th.p_loss = nullptr; th.p_pk = nullptr; th.p_inv = nullptr; th.pack = nullptr;
    th.pn = 0;
    // csh + kRunBits <= 62: the packed counters cannot overflow (always true here: C <= 2896
    // when the confusion is per thread).
    th.defer = STATS && !conf_atomic && !a.per_sample && csh + kRunBits <= 62;
    auto get = [&](int slot, int64_t n, int64_t elem, bool zero, int what) -> void* {
      if (n == 0) return nullptr;
      void* p = scratch_alloc(n, elem, zero);
      if (!p) { int64_t b; if (__builtin_mul_overflow(n, elem, &b)) b = INT64_MAX; fail.note(b, what); }
      own[slot].p = p;
      return p;
    };
    if (!wide) {
      // Lane buffers: the block's logits (tail blocks and rows), exps (gradient), soft targets.
      const int nbuf = 1 + (GRAD ? 1 : 0) + (SOFT ? 1 : 0);
      F* xb = (F*)get(0, nbuf * buf, sizeof(F), false, kAllocClasses);
      if (xb) {
        th.xbuf = xb;
        th.ebuf = GRAD ? xb + buf : nullptr;
        th.tbuf = SOFT ? xb + (GRAD ? 2 : 1) * buf : nullptr;
      }
      if (GRAD && a.rows) {
        F* gb = (F*)get(1, 2 * buf, sizeof(F), false, kAllocClasses);
        if (gb) { th.gb[0] = gb; th.gb[1] = gb + buf; }
#if LD_VW == 64 && defined(__AVX512F__)
        th.gidx = (int32_t*)get(2, buf, sizeof(int32_t), false, kAllocClasses);
        if (th.gidx)
          for (int64_t q = 0; q < buf; ++q) th.gidx[q] = (int32_t)((q % C) * B + q / C);
#endif
      }
    }
    if (STATS && a.per_sample && a.S > 1) th.loc = (int64_t*)get(3, 3 * C + 2, 8, true, kAllocSamples);
    if (STATS && conf_atomic) th.ccount = (int64_t*)get(4, C, 8, true, kAllocStats);
    if (STATS) {
      th.pi = (int32_t*)get(5, 6 * kCap, sizeof(int32_t), false, kAllocStats);
      th.p_loss = (double*)get(6, 2 * kCap, sizeof(double), false, kAllocStats);
      if (th.p_loss) { if (PACK) th.p_pk = (uint64_t*)(th.p_loss + kCap); else th.p_inv = th.p_loss + kCap; }
      th.pack = (uint64_t*)get(7, 2 * kSub * (int64_t)a.bins + 1, 8, true, kAllocBins);
    }
    return !fail.any();
  }

  void run(CEResult& out) {
    const int64_t T = choose_tile(C, B);
    tl.init(a.E, a.S, T);
    wide = C > wide_min_classes();
    const int64_t n_slabs = imin(tl.n_tiles, kMaxSlabs);
    const bool ps_seg = STATS && a.per_sample && a.S > 1;
    Owned tp_own;
    if (ps_seg && tl.within) {
      tile_part = (double*)must_alloc(tl.n_tiles + 1, sizeof(double), true, kAllocRows);
      tp_own.p = tile_part;
    }
    // More threads than slabs would only wait (and allocate their scratch).
    int nth = a.nthreads < 1 ? 1 : a.nthreads;
    if (nth > n_slabs) nth = n_slabs < 1 ? 1 : (int)n_slabs;
    SlabStore store;
    store.init(n_slabs, C, a.bins, STATS, kSub, joint() ? (int64_t)kSub * a.bins * a.bins : 0, nth);
    // Confusion: per-thread copies when small (kSub copies each when very small, for the same
    // reason as SlabStore), else one shared matrix with integer atomics. The copies cost a serial
    // zeroing and combine of nth * cper words, the atomics one locked add per counted element
    // spread over the threads: copies while nth^2 * cper <= 16 E (or the copies are tiny).
    // (65536, 1000) float32, 2 threads: 16 MB of copies made evaluate 19.2 ms, atomics 17.5 ms.
    int64_t* conf_all = nullptr;
    bool conf_atomic = false;
    const int csub = C <= 64 ? kSub : 1;
    const int64_t cper = C <= 65536 ? line_up(csub * C * C + 1) : INT64_MAX;  // + a scratch slot
    Owned conf_own;
    if (STATS) {
      const int64_t words = C <= 65536 ? (int64_t)nth * cper : INT64_MAX;
      if (words <= (8ll << 20) && cper < (1ll << 31) && words * nth <= imax(16 * a.E, 1 << 16)) {
        conf_all = (int64_t*)must_alloc(words, 8, true, kAllocStats);
        conf_own.p = conf_all;
      } else {
        conf_atomic = true;
      }
    }
    ThreadFail fail;
#pragma omp parallel num_threads(nth) if (nth > 1)
    {
      Thread th;
      Owned own[8];
      thread_init(th, fail, conf_atomic, csub, cper, conf_all, own);
      // Nothing is written unless every thread has its scratch.
#pragma omp barrier
      if (!fail.any()) {
#pragma omp for schedule(dynamic, 1)
        for (int64_t k = 0; k < n_slabs; ++k) {
          const int64_t t0 = k * tl.n_tiles / n_slabs, t1 = (k + 1) * tl.n_tiles / n_slabs;
          if (STATS) store.bind(store.acc[k], thread_id());
          for (int64_t t = t0; t < t1; ++t) {
            int64_t e0, e1; tl.tile(t, e0, e1);
            // Split at sample boundaries (S > 1); for NCHW a sample is one `o`.
            const int64_t U = a.S > 1 ? a.S : e1 - e0;
            for (int64_t s0 = e0; s0 < e1;) {
              const int64_t s1 = imin(e1, (s0 / U + 1) * U);
              segment(th, store.acc[k], s0, s1, t);
              s0 = s1;
            }
          }
        }
        if (th.ccount)
          for (int64_t c = 0; c < C; ++c) atomic_add(a.class_count + c, th.ccount[c]);
      }
    }
    fail.raise();
    // Ordered combine.
    for (int64_t k = 0; k < n_slabs; ++k) {
      const CEResult& r = store.acc[k].r;
      out.nll_sum += r.nll_sum; out.smooth_sum += r.smooth_sum; out.wsum += r.wsum;
      out.count += r.count; out.ignored += r.ignored; out.nonfinite += r.nonfinite;
      out.nonfinite_rows += r.nonfinite_rows;
      for (int q = 0; q < kMaxTopK; ++q) out.correct[q] += r.correct[q];
      out.true_prob_sum += r.true_prob_sum; out.entropy_sum += r.entropy_sum;
      out.below_inv_e += r.below_inv_e;
      if (r.bad) merge_bad(out, r.bad_value, r.bad_index);
      if (STATS) {  // the float sums, in slab order
        const SlabAcc& s = store.acc[k];
        for (int64_t c = 0; c < C; ++c) {
          double v = 0;
          for (int q = 0; q < kSub; ++q) v += s.class_loss[q * C + c];
          a.class_loss[c] += v;
        }
        for (int b = 0; b < a.bins; ++b) {
          double cs = 0;
          for (int q = 0; q < kSub; ++q) cs += s.conf_sum[q * a.bins + b];
          a.conf_sum[b] += cs;
        }
      }
    }
    // The integer counts, one copy per thread (exact, so the order does not matter).
    for (int64_t i = 0; STATS && i < store.n_int; ++i) {
      SlabAcc s;
      store.bind(s, i);
      const int nbins = a.bins;
      if (joint()) {
        const int64_t* J = s.class_count + C + 6 * (int64_t)kSub * nbins + 1;
        for (int q = 0; q < kSub; ++q)
          for (int t = 0; t < nbins; ++t)
            for (int m = 0; m < nbins; ++m) {
              const int64_t v = J[((int64_t)q * nbins + t) * nbins + m];
              a.true_hist[t] += v; a.margin_hist[m] += v;
            }
      }
      for (int b = 0; b < nbins; ++b)
        for (int q = 0; q < kSub; ++q) {
          const int64_t* h = s.conf_hist + 2 * q * nbins;
          a.true_hist[b] += s.true_hist[q * nbins + b];  // zero in joint mode
          a.conf_hist[b] += h[2 * b] + h[2 * b + 1];
          a.conf_correct[b] += h[2 * b + 1];
          a.margin_hist[b] += s.margin_hist[q * nbins + b];
        }
    }
    if (conf_all) {
      // Integer sums: order does not matter. Class counts are the confusion's row sums.
      for (int64_t q = 0; q < (int64_t)nth * csub; ++q)
        for (int64_t y = 0; y < C; ++y) {
          const int64_t* row = conf_all + (q / csub) * cper + (q % csub) * C * C + y * C;
          int64_t n = 0;
          for (int64_t p = 0; p < C; ++p) { a.confusion[y * C + p] += row[p]; n += row[p]; }
          a.class_count[y] += n;
        }
    }
    if (tile_part)
      for (int64_t t = 0; t < tl.n_tiles; ++t) a.s_loss[t / tl.tps] += tile_part[t];
  }
};

#include "kernels/ce_prob.h"     // CEProb: cross-entropy of probabilities (from_logits=False)
#include "kernels/ce_entry.h"    // ce_entry: dtypes and options to a CE / CEProb instantiation
#include "kernels/bce.h"         // BCE: binary cross-entropy, its statistics, bce_entry
#include "kernels/labels.h"      // labels_entry: the label pre-pass (the "mean" normaliser)
#include "kernels/surface.h"     // surface_entry: logistic-regression loss surface
#include "kernels/membench.h"    // mem_read_entry, mem_copy_entry: memory-speed references

// The entry points of this instruction set, handed to dispatch.cpp.
KernelTable table() {
  KernelTable t;
  t.name = LD_ISA_NAME;
  t.ce = ce_entry; t.bce = bce_entry; t.labels = labels_entry; t.surface = surface_entry;
  t.mem_read = mem_read_entry; t.mem_copy = mem_copy_entry;
  return t;
}
