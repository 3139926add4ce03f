// CE, the layouts: NCHW blocks read in place (class stride = inner), rows (NC, channels-last)
// transposed into lanes, tail blocks and soft targets through lane buffers; one segment.
// A part of kernels_impl.h, which includes the parts in order; not a standalone header.

// Rows layout, full block of rows: B rows of C contiguous values into the class-major lane
// buffer, VN x VN tiles transposed in registers (log2(VN) rounds of two-input shuffles that swap
// off-diagonal sub-blocks); the last tile of a row that C does not fill is read with masked
// loads; 2-byte types are widened as they are loaded. The scalar transposition (one value per
// load and store, and a gradient gathered back) was slower at every C measured, 2 to 250, with
// AVX-512 and AVX2: (2097152, 21) float32, 2 Zen 4 cores, cross_entropy 14.8-19.2 -> 10.4-11.9
// ms, the gradient in place 27.6-35.3 -> 16.0-18.9 ms (details in docs/performance.md).
template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
template <int H>
LD_INLINE void CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::tstage(VF* r) {
  if constexpr (H < VN) {
    constexpr VI lo = tmask_lo<H>(std::make_integer_sequence<int, VN>{});
    constexpr VI hi = tmask_hi<H>(std::make_integer_sequence<int, VN>{});
#pragma GCC unroll 16
    for (int i = 0; i < VN; ++i)
      if (!(i & H)) { const VF x = r[i], y = r[i + H]; r[i] = __builtin_shuffle(x, y, lo); r[i + H] = __builtin_shuffle(x, y, hi); }
  }
}

template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
template <class P>
LD_INLINE void CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::rows_to_lanes(
    const P* X, int64_t C, F* xb) {
  for (int j0 = 0; j0 < B; j0 += VN)
    for (int64_t c0 = 0; c0 < C; c0 += VN) {
      const int w = (int)imin(VN, C - c0);
      VF r[VN];
      const P* s = X + j0 * C + c0;
      if (w == VN) { for (int i = 0; i < VN; ++i) r[i] = loadv(s + i * C); }
      else for (int i = 0; i < VN; ++i) r[i] = loadv_part(s + i * C, w);
      tstage<8>(r); tstage<4>(r); tstage<2>(r); tstage<1>(r);
      for (int i = 0; i < w; ++i) vstore(xb + (c0 + i) * B + j0, r[i]);
    }
}

// The inverse: class-major lanes (gb[c * B + j]) back to nb <= B rows of C at G, by the same
// tiles (the transposition is its own inverse). Rows past nb are not written.
template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
template <class P>
LD_INLINE void CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::lanes_to_rows(
    const F* gb, int64_t C, int nb, P* G) {
  for (int j0 = 0; j0 < nb; j0 += VN)
    for (int64_t c0 = 0; c0 < C; c0 += VN) {
      const int w = (int)imin(VN, C - c0);
      VF r[VN];
      for (int i = 0; i < VN; ++i) r[i] = i < w ? vload<VF>(gb + (c0 + i) * B + j0) : VF{};
      tstage<8>(r); tstage<4>(r); tstage<2>(r); tstage<1>(r);
      const int h = (int)imin(VN, nb - j0);
      P* d = G + j0 * C + c0;
      if (w == VN) { for (int i = 0; i < h; ++i) storev(d + i * C, r[i]); }
      else for (int i = 0; i < h; ++i) storev_part(d + i * C, r[i], w);
    }
}

// Writes the pending block's gradient lanes (gb[gcur ^ 1]) to its rows.
template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
LD_INLINE void CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::rows_out(Thread& th, S* G) {
  const F* g = th.gb[th.gcur ^ 1];
  lanes_to_rows(g, C, th.gpend_nb, G + th.gpend * C);
  th.gpend = -1;
}

// One segment [e0, e1): within one sample when S > 1, within one `o` for the NCHW layout.
template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
void CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::segment(
    Thread& th, SlabAcc& sa, int64_t e0, int64_t e1, int64_t tile) {
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
      if constexpr (!SOFT) {
        if (nb == B) { rows_to_lanes(X + b0 * C, C, th.xbuf); tiled = true; }
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
