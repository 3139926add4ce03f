// CE, wide rows: one element at a time, SIMD across the classes (large C).
// A part of kernels_impl.h, which includes the parts in order; not a standalone header.

// Above wide_min_classes() classes (2048; measured on 2 Zen 4 cores, 1 thread, wide/lane time:
// cross_entropy 1.32 at C = 1024, 1.03 at 2048, 0.61 at 16384; its gradient 0.76, 0.43, 0.17)
// the elements are taken one at a time, SIMD across the classes, instead of B elements side by
// side: the lane buffers hold C * B values each (three
// of them: 3 x 2e7 x 64 x 4 bytes per thread for C = 2e7), this path nothing that grows with C.
// Pass 1 (max, first argmax, runner-up, rank, non-finite counts) and pass 2 (the exp sums) read
// the element's logits twice, the gradient a third time; a row up to L2 size is re-read from
// cache. The results fill the same Lane record as the lane passes, so the loss, statistics and
// counting code (finish) is shared.

template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
LD_INLINE int64_t CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::elem_off(int64_t e) const {
  return a.rows ? e * C : (e / a.inner) * C * a.inner + e % a.inner;
}

template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
template <class P>
LD_INLINE auto CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::load_cls(
    const P* p, int64_t cs, int64_t c0) -> VF {
  if (cs == 1) return loadv(p + c0);
  F t[VN];
  for (int i = 0; i < VN; ++i) t[i] = (F)p[(c0 + i) * cs];
  return vload<VF>(t);
}

// VN classes from c0, the first n of them real: the others read as `pad`.
template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
template <class P>
LD_INLINE auto CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::load_cls_tail(
    const P* p, int64_t cs, int64_t c0, int n, F pad) -> VF {
  F t[VN];
  for (int i = 0; i < VN; ++i) t[i] = i < n ? (F)p[(c0 + i) * cs] : pad;
  return vload<VF>(t);
}

// n soft-target values of one element from class c0 (float dtypes), zeros after them up to VN.
template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
LD_INLINE void CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::load_t(
    int64_t off, int64_t cs, int64_t c0, int n, F* out) const {
  if (cs == 1) load_cvt<F>(a.t, a.tdt, true, off + c0, n, out, 1);
  else for (int i = 0; i < n; ++i) load_cvt<F>(a.t, a.tdt, true, off + (c0 + i) * cs, 1, out + i, 1);
  for (int i = n; i < VN; ++i) out[i] = F(0);
}

template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
LD_INLINE auto CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::load_w(
    int64_t c0, int n) const -> VF {
  F t[VN];
  for (int i = 0; i < VN; ++i) t[i] = i < n ? (F)a.w[c0 + i] : F(0);
  return vload<VF>(t);
}

// Fills lane j of ln from one element: logits p[c * cs], soft targets at toff + c * cs.
template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
void CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::wide_row(
    Lane& ln, int j, const S* __restrict p, int64_t cs, int64_t toff) {
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
  // index, the second largest value (a repeated max is its own runner-up). Non-finite values
  // only make `fin` NaN here (one subtraction and one addition per vector); a row that has any
  // is rare and counted again afterwards. Without statistics, ranks or the argmax (the loss
  // alone) the pass is the max and that detector: 4 operations per vector instead of 11
  // ((1024, 32000) float32 cross_entropy, 2 Zen 4 cores: 8.2 -> see docs/performance.md).
  constexpr bool AM = ARGMAX || STATS || TOPK;
  F m = ninf, m2 = ninf; int64_t am = 0, nf = 0, nn = 0, gt = 0;
  {
    VF vm[K], vm2[K], vfin[K];
    VI vam[K], vgt[K], iota;
    for (int i = 0; i < VN; ++i) iota[i] = (IS)i;
    const VF vxy = VF{} + xy;
    const VI vy = VI{} + y;
    for (int k = 0; k < K; ++k) {
      vm[k] = VF{} + ninf; vm2[k] = vm[k]; vfin[k] = VF{}; vam[k] = VI{}; vgt[k] = VI{};
    }
    for (int64_t c0 = 0; c0 < Cv; c0 += step) {
#pragma GCC unroll 4
      for (int k = 0; k < K; ++k) {
        const VF v = load_cls(p, cs, c0 + k * VN);
        vfin[k] += v - v;  // NaN iff some value is NaN or +-inf
        if (TOPK) {
          const VI cv = iota + (IS)(c0 + k * VN);
          vgt[k] -= (v > vxy) | ((v == vxy) & (cv < vy));  // masks are -1
        }
        if (STATS) { const VF lo = v < vm[k] ? v : vm[k]; vm2[k] = lo > vm2[k] ? lo : vm2[k]; }
        if (AM) {
          const VI cv = iota + (IS)(c0 + k * VN);
          const VI g = v > vm[k];
          vam[k] = g ? cv : vam[k]; vm[k] = g ? v : vm[k];
        } else {
          vm[k] = v > vm[k] ? v : vm[k];
        }
      }
    }
    F fin = F(0);
    if (Cv) {
      int kb = 0, ib = 0;
      for (int k = 0; k < K; ++k)
        for (int i = 0; i < VN; ++i) {
          gt += vgt[k][i]; fin += vfin[k][i];
          const F v = vm[k][i];
          if (v > m || (v == m && (int64_t)vam[k][i] < am)) { m = v; am = vam[k][i]; kb = k; ib = i; }
        }
      if (STATS)
        for (int k = 0; k < K; ++k)
          for (int i = 0; i < VN; ++i) {
            m2 = vm2[k][i] > m2 ? vm2[k][i] : m2;
            if ((k != kb || i != ib) && vm[k][i] > m2) m2 = vm[k][i];
          }
    }
    for (int64_t c = Cv; c < C; ++c) {  // the rest, one by one, as the lane path
      const F v = (F)p[c * cs];
      fin += v - v;
      if (TOPK) gt += (v > xy) | ((v == xy) & (c < (int64_t)y));
      if (STATS) { const F lo = v < m ? v : m; m2 = lo > m2 ? lo : m2; }
      if (v > m) { m = v; am = c; }
    }
    if (!(fin == F(0)))  // rare: count the non-finite values and the NaNs
      for (int64_t c = 0; c < C; ++c) {
        const F v = (F)p[c * cs];
        nf += !(v - v == F(0)); nn += v != v;
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
    // Float partial sums over kWideRun steps at most, then into float64 vectors (as the lane
    // path), added up once at the end. (Adding the lanes to three scalars at every flush was a
    // chain of 3 x 64 dependent additions per 1024 classes: ~20 % of the loss of a cache-resident
    // (64, 32000) on one Zen 4 core.) The sums of features that are off are not touched.
    vd svd[NH] = {}, smd[NH] = {}, sdd[NH] = {};
    auto flush = [&] {
      for (int k = 0; k < K; ++k) {
        for (int h = 0; h < NH; ++h) {
          svd[h] += to_d(sv[k], h);
          if (SMOOTH && !SOFT) smd[h] += to_d(smv[k], h);
          if (STATS) sdd[h] += to_d(sdv[k], h);
        }
        sv[k] = VF{}; smv[k] = VF{}; sdv[k] = VF{};
      }
    };
    // Rows: this pass reads the row again from L2 and is bound by the exps; meanwhile the next
    // row (the next element's, contiguous) is brought into L2 at the same pace, so that its
    // first pass does not wait on memory with the multiply-add units idle. ((1024, 32000)
    // float32 cross_entropy, 2 Zen 4 cores: see docs/performance.md.)
    // (An address, not a pointer: past the last row it lies beyond the array; prefetches of
    // it are harmless, pointer arithmetic there is not.)
    const uintptr_t nxt = cs == 1 ? (uintptr_t)(p + C) : 0;
    constexpr int64_t kStepBytes = (int64_t)K * VN * (int64_t)sizeof(S);
    for (int64_t c0 = 0, n = 0; c0 < Cv; c0 += step) {
      if (nxt)
        for (int64_t q = 0; q < kStepBytes; q += 64)
          __builtin_prefetch((const char*)(nxt + (uintptr_t)(c0 * (int64_t)sizeof(S) + q)), 0, 2);
#pragma GCC unroll 4
      for (int k = 0; k < K; ++k) body(k, c0 + k * VN, load_cls(p, cs, c0 + k * VN), VN);
      if (++n == kWideRun) { flush(); n = 0; }
    }
    for (int64_t c0 = Cv; c0 < C; c0 += VN) {
      const int n = (int)imin(VN, C - c0);
      body(0, c0, n == VN ? load_cls(p, cs, c0) : load_cls_tail(p, cs, c0, n, m), n);
    }
    flush();
    for (int h = 0; h < NH; ++h)
      for (int i = 0; i < DN; ++i) { s += svd[h][i]; sm += smd[h][i]; sd += sdd[h][i]; }
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
template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
void CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::wide_grad(
    const Lane& ln, const F* ca, const F* cb, int nb, int64_t ebase) {
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
template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
void CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::wide_block(
    Thread& th, SlabAcc& sa, SegAcc& acc, int64_t b0, int nb) {
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
