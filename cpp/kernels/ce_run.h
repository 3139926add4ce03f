// CE, one call: per-thread scratch, the parallel loop over slabs and tiles, the ordered
// combine of the slabs and of the per-thread counts.
// A part of kernels_impl.h, which includes the parts in order; not a standalone header.

// Per-thread scratch; false when an allocation failed (noted in `fail`).
template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
bool CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::thread_init(
    Thread& th, ThreadFail& fail, bool conf_atomic, int csub, int64_t cper, int64_t* conf_all,
    Owned* own) {
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
    }
  }
  if (STATS && a.per_sample && a.S > 1) th.loc = (int64_t*)get(3, 3 * C + 2, 8, true, kAllocSamples);
  // Class counts, and with class_pred the predicted counts and true positives after them.
  if (STATS && conf_atomic) th.ccount = (int64_t*)get(4, (a.class_pred ? 3 : 1) * C, 8, true, kAllocStats);
  if (STATS) {
    th.pi = (int32_t*)get(5, 6 * kCap, sizeof(int32_t), false, kAllocStats);
    th.p_loss = (double*)get(6, 2 * kCap, sizeof(double), false, kAllocStats);
    if (th.p_loss) { if (PACK) th.p_pk = (uint64_t*)(th.p_loss + kCap); else th.p_inv = th.p_loss + kCap; }
    th.pack = (uint64_t*)get(7, 2 * kSub * (int64_t)a.bins + 1, 8, true, kAllocBins);
  }
  return !fail.any();
}

template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
void CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::run(CEResult& out) {
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
    // No confusion asked for: the per-class counts only (atomic path, O(C) per thread).
    if (a.confusion && words <= (8ll << 20) && cper < (1ll << 31) && words * nth <= imax(16 * a.E, 1 << 16)) {
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
      if (th.ccount) {
        for (int64_t c = 0; c < C; ++c) atomic_add(a.class_count + c, th.ccount[c]);
        if (a.class_pred)
          for (int64_t c = 0; c < C; ++c) {
            atomic_add(a.class_pred + c, th.ccount[C + c]);
            atomic_add(a.class_tp + c, th.ccount[2 * C + c]);
          }
      }
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
        if (a.class_pred) {
          a.class_tp[y] += row[y];
          for (int64_t p = 0; p < C; ++p) a.class_pred[p] += row[p];
        }
      }
  }
  if (tile_part)
    for (int64_t t = 0; t < tl.n_tiles; ++t) a.s_loss[t / tl.tps] += tile_part[t];
}
