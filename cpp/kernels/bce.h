// BCE: binary cross-entropy (elementwise), its statistics and its entry point.
// A part of kernels_impl.h, which includes the parts in order; not a standalone header.

// Binary cross-entropy (elementwise).
template <class S, bool GRAD, bool STATS>
struct BCE {
  using F = typename ComputeT<S>::type;
  static constexpr int B = LanesT<F>::B;
  const BCEArgs& a; const bool PW;
  explicit BCE(const BCEArgs& a_) : a(a_), PW(a_.pw != nullptr) {}

  void run(BCEResult& out) {
    Tiling tl; tl.init(a.E, 1, choose_tile(1, B) / 4);
    const int64_t n_slabs = imin(tl.n_tiles, kMaxSlabs);
    BCEResult part[kMaxSlabs];
    int nth = a.nthreads < 1 ? 1 : a.nthreads;
    if (nth > n_slabs) nth = n_slabs < 1 ? 1 : (int)n_slabs;
    // Histograms: one integer copy per thread (exact sums), the float sums per slab (in order).
    SlabStore store; store.init(n_slabs, 2, a.bins, STATS, 1, 0, nth);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nth) if (nth > 1)
    for (int64_t k = 0; k < n_slabs; ++k) {
      const int64_t t0 = k * tl.n_tiles / n_slabs, t1 = (k + 1) * tl.n_tiles / n_slabs;
      if (STATS) store.bind(store.acc[k], thread_id());
      for (int64_t t = t0; t < t1; ++t) {
        int64_t e0, e1; tl.tile(t, e0, e1);
        double acc[B] = {};
        for (int64_t b0 = e0; b0 < e1; b0 += B) block(part[k], store.acc[k], b0, (int)imin(B, e1 - b0), acc);
        double s = 0; for (int j = 0; j < B; ++j) s += acc[j];
        part[k].loss_sum += s;
      }
    }
    for (int64_t k = 0; k < n_slabs; ++k) {
      const BCEResult& p = part[k];
      out.loss_sum += p.loss_sum; out.count += p.count; out.correct += p.correct; out.nonfinite += p.nonfinite;
      out.true_prob_sum += p.true_prob_sum; out.entropy_sum += p.entropy_sum; out.below_inv_e += p.below_inv_e;
      if (p.bad && (!out.bad || p.bad_index < out.bad_index)) { out.bad = true; out.bad_value = p.bad_value; out.bad_index = p.bad_index; }
      if (STATS) {
        const SlabAcc& s = store.acc[k];
        for (int c = 0; c < 2; ++c) a.class_loss[c] += s.class_loss[c];
        for (int c = 0; c < 4; ++c) a.confusion[c] += s.conf4[c];
        for (int b = 0; b < a.bins; ++b) a.conf_sum[b] += s.conf_sum[b];
      }
    }
    for (int64_t q = 0; STATS && q < store.n_int; ++q) {
      SlabAcc s;
      store.bind(s, q);
      for (int c = 0; c < 2; ++c) a.class_count[c] += s.class_count[c];
      for (int b = 0; b < a.bins; ++b) {
        a.true_hist[b] += s.true_hist[b]; a.conf_hist[b] += s.conf_hist[b]; a.conf_correct[b] += s.conf_correct[b];
        a.margin_hist[b] += s.margin_hist[b]; a.prob_hist[b] += s.prob_hist[b];
      }
    }
  }

  LD_INLINE void block(BCEResult& r, SlabAcc& sa, int64_t b0, int nb, double* acc) {
    const S* X = (const S*)a.x + b0;
    F x[B], y[B], pw[B], li[B], sg[B], sn[B];
    load_cvt<F>(a.t, a.tdt, a.tfloat, b0, nb, y, 1);
    for (int j = 0; j < B; ++j) {
      bool in = j < nb;
      x[j] = in ? (F)X[j] : F(0);
      y[j] = in ? y[j] : F(0);
      pw[j] = PW && in ? (F)a.pw[((b0 + j) / a.pw_inner) % a.pw_len] : F(1);
    }
    for (int j = 0; j < nb; ++j) {
      if (!(y[j] >= F(0) && y[j] <= F(1)) && (!r.bad || b0 + j < r.bad_index)) {
        r.bad = true; r.bad_value = (double)y[j]; r.bad_index = b0 + j;
      }
    }
    if (!a.probs) {
      for (int j = 0; j < B; ++j) {
        F ax = x[j] < F(0) ? -x[j] : x[j];
        F ex = ld_exp(-ax);
        // (1-y) x + lw softplus(-x), written as a sum of non-negative terms so that confident
        // predictions do not cancel: x < 0 gives -x pw y, x >= 0 gives (1-y) x.
        F l1 = ld_log1p(ex);
        // lw = 1 + (pw - 1) y as (1 - y) + pw y: the first form lost a small pos_weight (in float
        // 1e-9 - 1 is -1, so a positive's loss and gradient were 0).
        F lw = PW ? (F(1) - y[j]) + pw[j] * y[j] : F(1);
        // pw y first: -x (pw y) is 0 for y = 0 even when -x pw overflows (torch: 0 there too).
        F lin = x[j] < F(0) ? -x[j] * ((PW ? pw[j] : F(1)) * y[j]) : (F(1) - y[j]) * x[j];
        li[j] = lin + lw * l1;
        F inv = F(1) / (F(1) + ex);
        sg[j] = x[j] >= F(0) ? inv : ex * inv;  // sigmoid(x)
        sn[j] = x[j] >= F(0) ? ex * inv : inv;  // sigmoid(-x), without 1 - sigmoid(x)
      }
      if (GRAD) {
        S* G = (S*)a.g + b0;
        const F sc = (F)a.gscale;
        for (int j = 0; j < nb; ++j) {
          // (1-y) - lw sigmoid(-x) == lw sigmoid(x) - pw y: use the form without cancellation.
          F lw = PW ? (F(1) - y[j]) + pw[j] * y[j] : F(1);
          F g = x[j] < F(0) ? lw * sg[j] - (PW ? pw[j] : F(1)) * y[j] : (F(1) - y[j]) - lw * sn[j];
          G[j] = (S)(sc * g);
        }
      }
    } else {
      const F lo = F(1e-7), hi = F(1) - F(1e-7);
      for (int j = 0; j < B; ++j) {
        F p = x[j] < lo ? lo : (x[j] > hi ? hi : x[j]);
        li[j] = -(pw[j] * y[j] * ld_log(p) + (F(1) - y[j]) * ld_log(F(1) - p));
        li[j] = x[j] == x[j] ? li[j] : x[j];
        sg[j] = x[j];
      }
      if (GRAD) {
        S* G = (S*)a.g + b0;
        const F sc = (F)a.gscale;
        for (int j = 0; j < nb; ++j) {
          bool inr = x[j] >= lo && x[j] <= hi;
          F p = x[j] < lo ? lo : (x[j] > hi ? hi : x[j]);
          G[j] = (S)(inr ? sc * (-(pw[j] * y[j] / p) + (F(1) - y[j]) / (F(1) - p)) : F(0));
        }
      }
    }
    for (int j = 0; j < nb; ++j) acc[j] += (double)li[j];
    if (a.loss_out) {
      if (a.xdt == F64) { double* o = (double*)a.loss_out + b0; for (int j = 0; j < nb; ++j) o[j] = (double)li[j]; }
      else { float* o = (float*)a.loss_out + b0; for (int j = 0; j < nb; ++j) o[j] = (float)li[j]; }
    }
    r.count += nb;
    for (int j = 0; j < nb; ++j) {
      bool fin = x[j] - x[j] == F(0);
      r.nonfinite += !fin;
      bool yt = y[j] >= F(0.5), pr = (double)x[j] > a.threshold;
      r.correct += x[j] == x[j] && yt == pr;  // the documented rule for +-inf; NaN is wrong
      if (STATS && fin) {
        const double p = (double)sg[j], pt = yt ? p : 1.0 - p, conf = p > 0.5 ? p : 1.0 - p;
        sa.class_loss[yt] += (double)li[j]; sa.class_count[yt]++;
        sa.true_hist[bin_of(pt, a.bins)]++; sa.prob_hist[bin_of(p, a.bins)]++;
        int cb = bin_of(conf, a.bins);
        sa.conf_hist[cb]++; sa.conf_correct[cb] += yt == pr; sa.conf_sum[cb] += conf;
        sa.margin_hist[bin_of(pt, a.bins)]++;  // margin 2*pt - 1 mapped to [0,1] is pt
        r.true_prob_sum += pt; r.below_inv_e += pt < 0.36787944117144233;
        double q = 1.0 - p;
        r.entropy_sum += (p > 0 ? -p * (double)ld_log(p) : 0.0) + (q > 0 ? -q * (double)ld_log(q) : 0.0);
        sa.conf4[(yt ? 2 : 0) + (pr ? 1 : 0)]++;
      }
    }
  }
};

template <class S>
void bce_target(const BCEArgs& a, BCEResult& r) {
  if (a.stats) { if (a.grad) BCE<S, true, true>(a).run(r); else BCE<S, false, true>(a).run(r); }
  else { if (a.grad) BCE<S, true, false>(a).run(r); else BCE<S, false, false>(a).run(r); }
}

void bce_entry(const BCEArgs& a, BCEResult& r) {
  switch (a.xdt) {
    case F16: return bce_target<_Float16>(a, r);
    case BF16: return bce_target<bf16>(a, r);
    case F32: return bce_target<float>(a, r);
    default: return bce_target<double>(a, r);
  }
}
