// CE, the statistics (evaluate): per-element histogram, confusion and per-class indices computed
// on vectors, then applied as increments (directly, or deferred and flushed in runs).
// A part of kernels_impl.h, which includes the parts in order; not a standalone header.

// Per-element statistics, VN lanes at a time. Everything except the increments themselves is
// computed on vectors, including the flat index of every increment, so the per-element loop
// (flush) is loads and adds only. DEFER: indices go to the pending buffers (per-thread
// confusion, no per-sample statistics); JN: joint true-probability x margin histogram.
// Not inlined: four variants per kernel, called once per block.
// Also counts the block (counted elements, non-finite values and rows) into sa.r and returns
// its top-1 hits by the accuracy rule.
template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
template <bool DEFER, bool JN>
int64_t CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::stats(
    Thread& th, SlabAcc& sa, SegAcc& acc, Lane& ln, int nb, int64_t ebase) {
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
    else {
      if (th.conf) atomic_add(th.conf + y * C + p, 1);
      th.ccount[y]++;
      if (a.class_pred) { th.ccount[C + p]++; th.ccount[2 * C + y] += ok; }
    }
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

// Apply the pending increments, in element order (the class loss sums do not depend on kPend;
// the packed confidence sums are exact within a run and added to the slab once per run).
template <class S, bool SOFT, bool LOSS, bool GRAD, bool STATS, bool TOPK, bool SMOOTH, bool ARGMAX>
LD_INLINE void CE<S, SOFT, LOSS, GRAD, STATS, TOPK, SMOOTH, ARGMAX>::flush(
    Thread& th, SlabAcc& sa) {
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
