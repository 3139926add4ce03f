// CE, the multi-class kernel (cross-entropy from logits, its gradient, accuracy, top-k and the
// statistics): the struct with its types, per-thread and per-block state and constants, and the
// declarations of its member functions, grouped by the file that defines them out of class.
// A part of kernels_impl.h, which includes the parts in order; not a standalone header.

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

  // VN values of storage type P as the compute type. bfloat16 and float16 are widened by vector
  // instructions: element by element through the stack they made the 2-byte types the slowest
  // (float16's scalar conversion is a library call): (1024, 32000) float16 cross_entropy
  // 26.5 -> 5.7 ms, NCHW (8, 21, 512, 512) 25.7 -> 9.8 ms (2 Zen 4 cores, kernel_micro).
  template <class P> static LD_INLINE VF loadv(const P* p) {
    if constexpr (sizeof(P) == sizeof(F)) return vload<VF>(p);
#if LD_VW == 64 && defined(__AVX512F__)
    else if constexpr (std::is_same<P, bf16>::value)
      return (VF)_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
    else if constexpr (std::is_same<P, _Float16>::value)
      return (VF)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p));
#elif LD_VW == 32 && defined(__AVX2__)
    else if constexpr (std::is_same<P, bf16>::value)
      return (VF)_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p)), 16));
    else if constexpr (std::is_same<P, _Float16>::value)
      return (VF)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p));
#endif
    else { F t[VN]; for (int i = 0; i < VN; ++i) t[i] = (F)p[i]; return vload<VF>(t); }
  }
  // Masks of the lanes below w: AVX-512 bits; AVX2 all-ones lanes of 32- or 64-bit elements.
#if LD_VW == 64 && defined(__AVX512F__)
  static LD_INLINE __mmask16 below(int w) { return (__mmask16)((1u << w) - 1); }
#elif LD_VW == 32 && defined(__AVX2__)
  static LD_INLINE __m256i below32(int w) { return (__m256i)(vi{0, 1, 2, 3, 4, 5, 6, 7} < w); }
  static LD_INLINE __m256i below64(int w) { return (__m256i)(vl{0, 1, 2, 3} < w); }
#endif
  // The first w < VN values (the others 0): masked loads where the instruction set has them (a
  // 21-class row is a 16-wide tile and a 5-wide one; a copy through the stack for the 5 made
  // channels-last cross_entropy 2x slower).
  template <class P> static LD_INLINE VF loadv_part(const P* p, int w) {
#if LD_VW == 64 && defined(__AVX512F__)
    if constexpr (std::is_same<P, float>::value) return (VF)_mm512_maskz_loadu_ps(below(w), p);
    if constexpr (std::is_same<P, double>::value) return (VF)_mm512_maskz_loadu_pd((__mmask8)below(w), p);
    if constexpr (sizeof(P) == 2 && sizeof(F) == 4) {
      const __m256i h = _mm256_maskz_loadu_epi16(below(w), p);
      if constexpr (std::is_same<P, bf16>::value)
        return (VF)_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
      else return (VF)_mm512_cvtph_ps(h);
    }
#endif
#if LD_VW == 32 && defined(__AVX2__)
    if constexpr (std::is_same<P, float>::value) return (VF)_mm256_maskload_ps(p, below32(w));
    if constexpr (std::is_same<P, double>::value) return (VF)_mm256_maskload_pd(p, below64(w));
#endif
    P t[VN] = {};
    for (int i = 0; i < w; ++i) t[i] = p[i];
    return loadv(t);
  }
  // The compute type rounded to the storage type: a bfloat16 as bf16's constructor rounds it
  // (to nearest even, any NaN the quiet 0x7fc0), a float16 by vcvtps2ph to nearest even.
  template <class P> static LD_INLINE void storev(P* p, VF v) {
    if constexpr (sizeof(P) == sizeof(F)) vstore<VF>(p, v);
#if LD_VW == 64 && defined(__AVX512F__)
    else if constexpr (sizeof(P) == 2 && sizeof(F) == 4) _mm256_storeu_si256((__m256i*)p, to_half(v));
#endif
    else { F t[VN]; vstore<VF>(t, v); for (int i = 0; i < VN; ++i) p[i] = (P)t[i]; }
  }
  template <class P> static LD_INLINE void storev_part(P* p, VF v, int w) {
#if LD_VW == 64 && defined(__AVX512F__)
    if constexpr (std::is_same<P, float>::value) { _mm512_mask_storeu_ps(p, below(w), (__m512)v); return; }
    if constexpr (std::is_same<P, double>::value) { _mm512_mask_storeu_pd(p, (__mmask8)below(w), (__m512d)v); return; }
    if constexpr (sizeof(P) == 2 && sizeof(F) == 4) {
      _mm256_mask_storeu_epi16(p, below(w), to_half<P>(v));
      return;
    }
#endif
#if LD_VW == 32 && defined(__AVX2__)
    if constexpr (std::is_same<P, float>::value) { _mm256_maskstore_ps(p, below32(w), (__m256)v); return; }
    if constexpr (std::is_same<P, double>::value) { _mm256_maskstore_pd(p, below64(w), (__m256d)v); return; }
#endif
    F t[VN]; vstore<VF>(t, v);
    for (int i = 0; i < w; ++i) p[i] = (P)t[i];
  }
#if LD_VW == 64 && defined(__AVX512F__)
  template <class P = S> static LD_INLINE __m256i to_half(VF v) {
    if constexpr (std::is_same<P, bf16>::value) {
      const __m512i b = _mm512_castps_si512((__m512)v);
      const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)),
                                                           _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1))), 16);
      const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
      return _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7fc0)));
    } else {
      return _mm512_cvtps_ph((__m512)v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
  }
#endif

  static LD_INLINE vd to_d(VF v, int h) {
    if constexpr (sizeof(F) == 8) { (void)h; return v; }
    else return cvt_half(v, h);
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

  // The shuffle masks of the in-register transposition (rows_to_lanes, ce_layout.h).
  template <int H, int... P> static constexpr VI tmask_lo(std::integer_sequence<int, P...>) { return VI{((P & H) ? VN + P - H : P)...}; }
  template <int H, int... P> static constexpr VI tmask_hi(std::integer_sequence<int, P...>) { return VI{((P & H) ? VN + P : P + H)...}; }

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

  // Wide rows (ce_wide.h): above wide_min_classes() classes, one element at a time, SIMD across
  // the classes.
  bool wide = false;
  static constexpr int kWK = 4;  // independent vectors per step (latency of the max / sums)
  static constexpr int kWideRun = 16;  // steps per float partial sum (then float64)

  // Member functions, defined out of class. Those that are not LD_INLINE are declared `inline`
  // here: defined in the class, as they were before, they were implicitly inline, and GCC weighs
  // declared-inline functions differently when it inlines. Their definitions repeat neither
  // `inline` nor `noinline` (GCC warns when the two meet on different declarations).

  // ce_passes.h: the labels into the lanes, and the two passes over one block (max; exp sums).
  LD_INLINE void hard_labels(Lane& ln, SlabAcc& sa, int nb, int64_t ebase);
  template <bool LANES_ARE_CLASSES = false>
  LD_INLINE void soft_acc(const F* tv, int64_t c, VF d, vd* A, vd* Bs) const;
  template <class P> static LD_INLINE void gather_target(const P* src, int64_t cs, const IS* y, F* out);
  template <class P>
  LD_INLINE void block(Thread& th, SlabAcc& sa, SegAcc& acc, const P* __restrict src, int64_t cs,
                       const F* __restrict tsrc, const int64_t* lab, int nb, int64_t ebase,
                       P* gdst, int64_t gcs);
  // ce_finish.h: loss, lane gradient and counting of a block whose Lane record is complete.
  template <bool WIDE, class P>
  LD_INLINE void finish(Thread& th, SlabAcc& sa, SegAcc& acc, Lane& ln, int nb, int64_t ebase,
                        const F* __restrict tsrc, P* gdst, int64_t gcs);
  // ce_wide.h: the wide-row path (one element at a time, SIMD across the classes).
  LD_INLINE int64_t elem_off(int64_t e) const;
  template <class P> static LD_INLINE VF load_cls(const P* p, int64_t cs, int64_t c0);
  template <class P> static LD_INLINE VF load_cls_tail(const P* p, int64_t cs, int64_t c0, int n, F pad);
  LD_INLINE void load_t(int64_t off, int64_t cs, int64_t c0, int n, F* out) const;
  LD_INLINE VF load_w(int64_t c0, int n) const;
  __attribute__((noinline)) inline void wide_row(Lane& ln, int j, const S* __restrict p, int64_t cs, int64_t toff);
  __attribute__((noinline)) inline void wide_grad(const Lane& ln, const F* ca, const F* cb, int nb, int64_t ebase);
  __attribute__((noinline)) inline void wide_block(Thread& th, SlabAcc& sa, SegAcc& acc, int64_t b0, int nb);
  // ce_stats.h: per-element statistics (histograms, confusion, per-class sums) and their flush.
  template <bool DEFER, bool JN>
  __attribute__((noinline)) inline int64_t stats(Thread& th, SlabAcc& sa, SegAcc& acc, Lane& ln, int nb, int64_t ebase);
  LD_INLINE void flush(Thread& th, SlabAcc& sa);
  // ce_layout.h: the NCHW and rows layouts: blocks into lanes (transposition), gradient rows out,
  // one segment of elements.
  template <int H> static LD_INLINE void tstage(VF* r);
  static LD_INLINE VF load_part(const F* s, int w);
  static LD_INLINE void store_part(F* d, VF v, int w);
  template <class P> static LD_INLINE void rows_to_lanes(const P* X, int64_t C, F* xb);
  template <class P> static LD_INLINE void lanes_to_rows(const F* gb, int64_t C, int nb, P* G);
  LD_INLINE void rows_out(Thread& th, S* G);
  inline void segment(Thread& th, SlabAcc& sa, int64_t e0, int64_t e1, int64_t tile);
  // ce_run.h: per-thread scratch, the parallel loop over slabs and the ordered combine.
  inline bool thread_init(Thread& th, ThreadFail& fail, bool conf_atomic, int csub, int64_t cper,
                          int64_t* conf_all, Owned* own);
  inline void run(CEResult& out);
};
