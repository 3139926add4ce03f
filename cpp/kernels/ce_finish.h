// CE, the end of a block (lane and wide paths alike): per-element loss, the lane gradient (the
// wide one is in ce_wide.h), statistics (ce_stats.h) and top-k counting.
// A part of kernels_impl.h, which includes the parts in order; not a standalone header.

// Loss, gradient (lane form, or per element for the wide rows), statistics and counting of one
// block whose Lane record is complete.
template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
template <bool WIDE, class P>
LD_INLINE void CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::finish(
    Thread& th, SlabAcc& sa, SegAcc& acc, Lane& ln, int nb, int64_t ebase, const F* __restrict tsrc,
    P* gdst, int64_t gcs) {
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
