// CEProb: cross-entropy of probabilities (from_logits=False).
// A part of kernels_impl.h, which includes the parts in order; not a standalone header.

// from_logits=False: probabilities, Keras semantics (normalise by the class sum, clip to
// [1e-7, 1 - 1e-7]; the clip has zero derivative outside the range). Loss and gradient only.
// One element at a time (no scratch that grows with C): the class sum, then the clipped logs, then
// the gradient; sums over the classes in float64, the clip and the logs in the compute type.
template <class S, bool SOFT, bool GRAD>
struct CEProb {
  using F = typename ComputeT<S>::type;
  static constexpr int B = LanesT<F>::B;
  const CEArgs& a; int64_t C; double one_m_eps, eps_c; const bool WEIGHT;
  explicit CEProb(const CEArgs& a_) : a(a_), C(a_.C), WEIGHT(a_.w != nullptr) { one_m_eps = 1.0 - a.eps; eps_c = a.eps / (double)C; }

  void run(CEResult& out) {
    const int64_t T = choose_tile(C, B);
    Tiling tl; tl.init(a.E, a.S, T);
    const int64_t n_slabs = imin(tl.n_tiles, kMaxSlabs);
    CEResult part[kMaxSlabs];
    int nth = a.nthreads < 1 ? 1 : a.nthreads;
    if (nth > n_slabs) nth = n_slabs < 1 ? 1 : (int)n_slabs;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nth) if (nth > 1)
    for (int64_t k = 0; k < n_slabs; ++k) {
      const int64_t t0 = k * tl.n_tiles / n_slabs, t1 = (k + 1) * tl.n_tiles / n_slabs;
      for (int64_t t = t0; t < t1; ++t) {
        int64_t e0, e1; tl.tile(t, e0, e1);
        double nll = 0, sm = 0, ws = 0;
        for (int64_t e = e0; e < e1; ++e) element(part[k], e, nll, sm, ws);
        part[k].nll_sum += nll; part[k].smooth_sum += sm; part[k].wsum += ws;
      }
    }
    for (int64_t k = 0; k < n_slabs; ++k) {
      out.nll_sum += part[k].nll_sum; out.smooth_sum += part[k].smooth_sum; out.wsum += part[k].wsum;
      out.count += part[k].count; out.ignored += part[k].ignored;
      if (part[k].bad) merge_bad(out, part[k].bad_value, part[k].bad_index);
    }
  }

  LD_INLINE double tval(int64_t off) const {
    double v = 0;
    load_cvt<double>(a.t, a.tdt, true, off, 1, &v, 1);
    return v;
  }

  void element(CEResult& r, int64_t e, double& nll, double& smacc, double& wacc) {
    const S* X = (const S*)a.x;
    const double* w = a.w;
    const int64_t cs = a.rows ? 1 : a.inner;
    const int64_t off = a.rows ? e * C : (e / a.inner) * C * a.inner + e % a.inner;
    const S* x = X + off;
    int64_t y = 0;
    if (!SOFT) {
      load_labels(a.t, a.tdt, e, 1, &y);
      if (y == a.ignore && !(a.tdt == U64 && y < 0)) {
        r.ignored++;
        if (a.loss_out) store_loss(e, 0.0);
        if (GRAD) { S* G = (S*)a.g + off; for (int64_t c = 0; c < C; ++c) G[c * cs] = (S)0; }
        return;
      }
      if (y < 0 || y >= C) {
        merge_bad(r, y, e);
        if (a.loss_out) store_loss(e, 0.0);
        return;  // (an error is raised: the gradient is not used)
      }
    }
    double ssum = 0;
    for (int64_t c = 0; c < C; ++c) ssum += (double)x[c * cs];
    const F lo = F(1e-7), hi = F(1) - F(1e-7);
    double lnll = 0, lsoft = 0, A = 0;
    const double wy = !SOFT && WEIGHT ? w[y] : 1.0;
    for (int64_t c = 0; c < C; ++c) {
      const double wc = WEIGHT ? w[c] : 1.0;
      const F q = (F)((double)x[c * cs] / ssum);
      const F qc = q < lo ? lo : (q > hi ? hi : q);
      const double nl = -(double)ld_log(qc);
      const bool inr = q >= lo && q <= hi;
      double wt;
      if (SOFT) { wt = wc * (tval(off + c * cs) * one_m_eps + eps_c); lsoft += wt * nl; }
      else {
        const bool hot = c == y;
        lnll += hot ? nl : 0.0;
        lsoft += wc * nl;
        wt = eps_c * wc + (hot ? one_m_eps * wy : 0.0);
      }
      A += inr ? wt : 0.0;
    }
    r.count++;
    double li;
    if (SOFT) { li = lsoft; nll += li; wacc += 1.0; }
    else {
      nll += wy * lnll; wacc += wy; smacc += lsoft;
      li = a.eps == 0.0 ? wy * lnll : one_m_eps * wy * lnll + eps_c * lsoft;
    }
    if (a.loss_out) store_loss(e, li);
    if (GRAD) {
      S* G = (S*)a.g + off;
      const F sc = (F)(a.gscale / ssum), Af = (F)A;
      for (int64_t c = 0; c < C; ++c) {
        const double wc = WEIGHT ? w[c] : 1.0;
        const F q = (F)((double)x[c * cs] / ssum);
        const bool inr = q >= lo && q <= hi;
        double wt;
        if (SOFT) wt = wc * (tval(off + c * cs) * one_m_eps + eps_c);
        else wt = eps_c * wc + (c == y ? one_m_eps * wy : 0.0);
        G[c * cs] = (S)(sc * (Af - (inr ? (F)wt / q : F(0))));
      }
    }
  }

  LD_INLINE void store_loss(int64_t e, double li) const {
    if (a.xdt == F64) ((double*)a.loss_out)[e] = li;
    else ((float*)a.loss_out)[e] = (float)li;
  }
};
