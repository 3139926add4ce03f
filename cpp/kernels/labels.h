// The label pre-pass and its entry point.
// A part of kernels_impl.h, which includes the parts in order; not a standalone header.

// Label pre-pass (reads only the labels): the "mean" normaliser for the gradient.
template <class L>
void labels_t(const LabelArgs& a, LabelResult& out) {
  Tiling tl; tl.init(a.E, 1, 1 << 16);
  const int64_t n_slabs = imin(tl.n_tiles, kMaxSlabs);
  LabelResult part[kMaxSlabs];
  int nth = a.nthreads < 1 ? 1 : a.nthreads;
  if (nth > n_slabs) nth = n_slabs < 1 ? 1 : (int)n_slabs;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nth) if (nth > 1)
  for (int64_t k = 0; k < n_slabs; ++k) {
    const L* T = (const L*)a.t;
    for (int64_t t = k * tl.n_tiles / n_slabs; t < (k + 1) * tl.n_tiles / n_slabs; ++t) {
      int64_t e0, e1; tl.tile(t, e0, e1);
      double ws = 0; int64_t cnt = 0;
      for (int64_t e = e0; e < e1; ++e) {
        int64_t y = label_at(T + e);
        if (y == a.ignore && !label_wraps<L>(y)) continue;
        if (y < 0 || y >= a.C) {
          if (!part[k].bad) { part[k].bad = true; part[k].bad_value = y; part[k].bad_index = e; }
          continue;
        }
        cnt++; ws += a.w ? a.w[y] : 1.0;
      }
      part[k].wsum += ws; part[k].count += cnt;
    }
  }
  for (int64_t k = 0; k < n_slabs; ++k) {
    out.wsum += part[k].wsum; out.count += part[k].count;
    if (part[k].bad && (!out.bad || part[k].bad_index < out.bad_index)) {
      out.bad = true; out.bad_value = part[k].bad_value; out.bad_index = part[k].bad_index;
    }
  }
}

void labels_entry(const LabelArgs& a, LabelResult& r) {
  switch (a.tdt) {
    case U8: case LBOOL: return labels_t<uint8_t>(a, r);
    case I8: return labels_t<int8_t>(a, r);
    case U16: return labels_t<uint16_t>(a, r);
    case I16: return labels_t<int16_t>(a, r);
    case U32: return labels_t<uint32_t>(a, r);
    case I32: return labels_t<int32_t>(a, r);
    case U64: return labels_t<uint64_t>(a, r);
    default: return labels_t<int64_t>(a, r);
  }
}
