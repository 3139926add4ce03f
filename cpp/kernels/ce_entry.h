// The cross-entropy entry point: from CEArgs (dtype, soft/hard targets, options) to the CE or
// CEProb instantiation that runs (LD_CE).
// A part of kernels_impl.h, which includes the parts in order; not a standalone header.

// Dispatch over dtypes and options.
template <class S, bool SOFT>
void ce_flags(const CEArgs& a, CEResult& r) {
  const bool sm = a.eps != 0.0;
  bool rank = false;
  for (int k = 0; k < a.nk; ++k) rank |= a.ks[k] > 1;
  if (a.probs) {
    if (a.grad) CEProb<S, SOFT, true>(a).run(r); else CEProb<S, SOFT, false>(a).run(r);
    return;
  }
#define LD_CE(LOSS, GRAD, STATS, TOPK, AM)                                                    \
  do {                                                                                        \
    if (sm) CE<S, SOFT, LOSS, GRAD, STATS, TOPK, true, AM>(a).run(r);                         \
    else CE<S, SOFT, LOSS, GRAD, STATS, TOPK, false, AM>(a).run(r);                           \
  } while (0)
  if (a.stats) {
    if (a.grad) { if (rank) LD_CE(true, true, true, true, true); else LD_CE(true, true, true, false, true); }
    else { if (rank) LD_CE(true, false, true, true, true); else LD_CE(true, false, true, false, true); }
  }
  else if (a.grad) LD_CE(true, true, false, false, false);
  else if (a.loss) LD_CE(true, false, false, false, false);
  else if (rank) CE<S, SOFT, false, false, false, true, false, false>(a).run(r);  // no exp at all
  else CE<S, SOFT, false, false, false, false, false, true>(a).run(r);
#undef LD_CE
}

template <class S>
void ce_labels(const CEArgs& a, CEResult& r) {
  if (a.soft) ce_flags<S, true>(a, r); else ce_flags<S, false>(a, r);
}

void ce_entry(const CEArgs& a, CEResult& r) {
  switch (a.xdt) {
    case F16: return ce_labels<_Float16>(a, r);
    case BF16: return ce_labels<bf16>(a, r);
    case F32: return ce_labels<float>(a, r);
    default: return ce_labels<double>(a, r);
  }
}
