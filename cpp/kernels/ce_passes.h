// CE, one block of B lanes: labels (hard) or the target argmax (soft) into the lanes, pass 1 (max,
// argmax, runner-up, rank of the true class) and pass 2 (sums of exp(x - max), LD_PASS2_CLASS).
// A part of kernels_impl.h, which includes the parts in order; not a standalone header.

// Labels of the block's nb elements into the lanes (padding lanes: label 0, not valid).
template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
LD_INLINE void CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::hard_labels(
    Lane& ln, SlabAcc& sa, int nb, int64_t ebase) {
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
template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
template <bool LANES_ARE_CLASSES>
LD_INLINE void CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::soft_acc(
    const F* tv, int64_t c, VF d, vd* A, vd* Bs) const {
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

// x[y_j] for every lane (y_j = 0 for invalid lanes, so always in bounds).
template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
template <class P>
LD_INLINE void CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::gather_target(
    const P* src, int64_t cs, const IS* y, F* out) {
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

// Process one block of B lanes from a source with class stride cs (lane stride 1).
template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
template <class P>
LD_INLINE void CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::block(
    Thread& th, SlabAcc& sa, SegAcc& acc, const P* __restrict src, int64_t cs,
    const F* __restrict tsrc, const int64_t* lab, int nb, int64_t ebase, P* gdst, int64_t gcs) {
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
