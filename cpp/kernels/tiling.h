// Deterministic work split and checked scratch: tiles (fixed by the shape) grouped into a fixed
// number of slabs combined in order, so results do not depend on the thread count; scratch
// that throws or is noted per thread on failure; the per-slab accumulators.
// A part of kernels_impl.h, which includes the parts in order; not a standalone header.

constexpr int kMaxSlabs = 64;

// Tiling: tiles never straddle a sample boundary unless they hold whole samples.
struct Tiling {
  int64_t E = 0, S = 1, T = 1, n_tiles = 0, tps = 1, spt = 1;
  bool within = false;  // S >= T: a sample spans several tiles
  void init(int64_t E_, int64_t S_, int64_t T_) {
    E = E_; S = S_ < 1 ? 1 : S_; T = T_ < 1 ? 1 : T_;
    if (E == 0) { n_tiles = 0; return; }
    int64_t N = E / S;
    if (S >= T) { within = true; tps = (S + T - 1) / T; n_tiles = N * tps; }
    else { within = false; spt = T / S; n_tiles = (N + spt - 1) / spt; }
  }
  void tile(int64_t t, int64_t& e0, int64_t& e1) const {
    if (within) { int64_t n = t / tps, j = t % tps; e0 = n * S + j * T; e1 = imin(n * S + S, e0 + T); }
    else { e0 = t * spt * S; e1 = imin(E, e0 + spt * S); }
  }
};

LD_INLINE int64_t choose_tile(int64_t per_elem_values, int B) {
  // ~64K values per tile: big enough to amortise scheduling, small enough for many slabs.
  int64_t T = 65536 / (per_elem_values < 1 ? 1 : per_elem_values);
  T = (T / B) * B;
  return T < B ? B : T;
}

LD_INLINE int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

LD_INLINE void atomic_add(int64_t* p, int64_t v) { __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }

// Accumulators that different threads write sit on different cache lines: two threads updating
// neighbouring slabs (or per-thread copies) through one shared line would move that line between
// the cores on every increment.
constexpr int64_t kLine = 64;
LD_INLINE int64_t line_up(int64_t n_words) { return (n_words + 7) / 8 * 8; }  // 8-byte words
// Every scratch block comes from scratch_alloc (64-byte aligned, whole lines): nullptr on failure.
// Outside a parallel region a failure throws AllocFailure at once; inside one, each thread notes
// it (ThreadFail) and the work is skipped by every thread, so no output is half written.
LD_INLINE void* must_alloc(int64_t count, int64_t elem, bool zero, int what) {
  void* p = scratch_alloc(count, elem, zero);
  if (!p) {
    int64_t b;
    if (__builtin_mul_overflow(count, elem, &b)) b = INT64_MAX;
    throw AllocFailure{b, what};
  }
  return p;
}
// Owns a scratch block until the end of the scope (the throw paths included).
struct Owned {
  void* p = nullptr;
  Owned() = default;
  explicit Owned(void* q) : p(q) {}
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  ~Owned() { scratch_free(p); }
};
// The first allocation failure of the threads of one parallel region.
struct ThreadFail {
  int64_t bytes = 0; int what = 0;
  void note(int64_t b, int w) {
#pragma omp critical(lossdiag_alloc_fail)
    if (!bytes) { bytes = b > 0 ? b : 1; what = w; }
  }
  bool any() const { return __atomic_load_n(&bytes, __ATOMIC_RELAXED) != 0; }
  void raise() const { if (bytes) throw AllocFailure{bytes, what}; }
};

// Per-slab accumulators (floats are summed per slab and combined in slab order).
struct alignas(kLine) SlabAcc {
  CEResult r;
  double* class_loss = nullptr; int64_t* class_count = nullptr;
  int64_t* true_hist = nullptr; int64_t* conf_hist = nullptr; int64_t* conf_correct = nullptr;
  double* conf_sum = nullptr; int64_t* margin_hist = nullptr; int64_t* prob_hist = nullptr;
  int64_t conf4[4] = {};  // binary 2x2 confusion
};

// nsub > 1 (multi-class kernel): every histogram and per-class sum has nsub copies, lane j
// writing copy j % nsub, so runs of equal bins (confident pixels all land in the top bin) do not
// serialise on one memory location; the copies are added in a fixed order at the end.
// Layout per slab: doubles class_loss[nsub][C], conf_sum[nsub][bins], one scratch slot; integers
// class_count[C], true_hist[nsub][bins], conf_hist[nsub][2 * bins] (the multi-class kernel counts
// (bin, correct) pairs there: index 2 * bin + correct), conf_correct, margin_hist,
// prob_hist[nsub][bins], one scratch slot, then `extra` integers (the multi-class kernel's joint
// true-probability x margin histogram). Rows left out of the statistics are added to the scratch
// slots, so the per-element loop has no branch.
// int_copies > 0: the integers exist once per thread instead of once per slab (integer sums do
// not depend on the order), and bind() points a slab at the copy of the thread that runs it.
// With 64 slabs the multi-class kernel's joint histograms alone made 1 MB per call: ~270 fresh
// pages to fault in and zero on each `evaluate` until glibc stopped handing the block back to the
// kernel (~8 calls; ~0.4 ms each on a 2-core KVM), and a combine over 64 copies on every call.
struct SlabStore {
  SlabAcc acc[kMaxSlabs];
  double* fmem = nullptr; int64_t* imem = nullptr;
  int64_t ni = 0;     // words per integer copy
  int64_t nb = 0;     // nsub * bins
  int64_t C = 0;
  int64_t n_int = 0;  // integer copies: one per slab, or int_copies
  void init(int64_t n_slabs, int64_t C_, int bins, bool stats, int nsub = 1, int64_t extra = 0,
            int64_t int_copies = 0) {
    if (!stats) return;
    C = C_; nb = (int64_t)nsub * bins;
    const int64_t nf = line_up(nsub * C + nb + 1);
    ni = line_up(C + 6 * nb + 1 + extra);
    n_int = int_copies > 0 ? int_copies : n_slabs;
    // Which argument made the request large: the histograms (bins) or the classes.
    const int what = 6 * nb + extra > C ? kAllocBins : kAllocStats;
    fmem = (double*)must_alloc(n_slabs * nf, sizeof(double), true, what);
    imem = (int64_t*)must_alloc(n_int * ni, sizeof(int64_t), true, what);
    for (int64_t k = 0; k < n_slabs; ++k) {
      SlabAcc& s = acc[k];
      s.class_loss = fmem + k * nf; s.conf_sum = s.class_loss + nsub * C;
      if (int_copies <= 0) bind(s, k);
    }
  }
  // The integer arrays of copy q (slab q, or thread q with int_copies).
  void bind(SlabAcc& s, int64_t q) const {
    s.class_count = imem + q * ni; s.true_hist = s.class_count + C; s.conf_hist = s.true_hist + nb;
    s.conf_correct = s.conf_hist + 2 * nb; s.margin_hist = s.conf_correct + nb;
    s.prob_hist = s.margin_hist + nb;
  }
  SlabStore() = default;
  SlabStore(const SlabStore&) = delete;
  SlabStore& operator=(const SlabStore&) = delete;
  ~SlabStore() { scratch_free(fmem); scratch_free(imem); }
};

LD_INLINE void merge_bad(CEResult& r, int64_t value, int64_t index) {
  if (!r.bad || index < r.bad_index) { r.bad = true; r.bad_value = value; r.bad_index = index; }
}

LD_INLINE int bin_of(double v, int bins) {
  int b = (int)(v * bins);
  b = b < 0 ? 0 : b;
  return b >= bins ? bins - 1 : b;
}
