// Small helpers, the element types and the loading of labels and targets: bf16, the compute
// type and lanes per block of a storage type, labels of one block into the lanes (checked and
// counted), and values of any dtype converted to the compute type.
// A part of kernels_impl.h, which includes the parts in order; not a standalone header.

LD_INLINE int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
LD_INLINE int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// bfloat16 storage (torch.bfloat16): the upper half of a float32. NumPy has no such type, so the
// kernels get their own; like float16, it is loaded into float32 and computed there. Loads widen
// exactly; stores round to nearest even as torch does (any NaN becomes the quiet NaN 0x7fc0), so
// a bfloat16 gradient is the float32 one rounded the way torch rounds it.
struct bf16 {
  uint16_t u;
  bf16() = default;
  LD_INLINE bf16(float f) {
    const uint32_t b = bits(f);
    u = (b & 0x7fffffffu) > 0x7f800000u ? (uint16_t)0x7fc0
                                         : (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
  }
  LD_INLINE operator float() const { return fbits((uint32_t)u << 16); }
};
static_assert(sizeof(bf16) == 2, "bf16 must be two bytes (arrays of it alias the tensor)");

template <class S> struct ComputeT { using type = float; };
template <> struct ComputeT<double> { using type = double; };
// Lanes per block: 4 independent vectors, so the per-class dependency chains (max, sums)
// overlap instead of waiting on each other's latency.
template <class F> struct LanesT { static constexpr int B = 4 * VecT<F>::N; };

template <class L> LD_INLINE int64_t label_at(const L* p) { return (int64_t)*p; }
// uint64 labels above INT64_MAX wrap to negative int64: they must never match a negative
// ignore_index (they are simply out of range).
template <class L> LD_INLINE int64_t label_wraps(int64_t v) {
  return (sizeof(L) == 8 && (L)(-1) > (L)0) ? (int64_t)(v < 0) : 0;
}

// Labels and float targets are converted per block (a runtime switch per block, not per element):
// templating every kernel on every label dtype made the build explode.
template <class L> LD_INLINE void load_labels_t(const void* base, int64_t e0, int nb, int64_t* out) {
  const L* p = (const L*)base + e0;
  for (int j = 0; j < nb; ++j) out[j] = (int64_t)p[j];
}
// Labels of one block -> (y, valid) in the lanes' integer type, counting ignored ones and
// flagging bad ones; uniform integer arithmetic so the loop vectorises.
template <class L, class IS>
LD_INLINE void labels_block_t(const void* base, int64_t e0, int nb, int64_t ignore, int64_t C,
                              IS* y, IS* valid, int64_t& ign, bool& anybad) {
  const L* p = (const L*)base + e0;
  // Labels that fit int32 (8/16-bit, int32): int32 arithmetic, twice the lanes per vector of
  // the int64 form below (the label checks were ~3 % of a 1-thread evaluate profile, uint8
  // masks). An ignore_index outside int32 cannot match an 8/16-bit label: INT32_MIN stands in.
  constexpr bool NARROW = sizeof(L) <= 2 || (sizeof(L) == 4 && (L)(-1) < (L)0);
  const bool ig_fits = ignore >= INT32_MIN && ignore <= INT32_MAX;
  if (NARROW && (ig_fits || sizeof(L) <= 2) && C <= INT32_MAX) {
    const int32_t ig32 = ig_fits ? (int32_t)ignore : INT32_MIN, C32 = (int32_t)C;
    int32_t ig = 0, bad = 0;
    for (int j = 0; j < nb; ++j) {
      const int32_t v = (int32_t)p[j];
      const int32_t isig = v == ig32;
      const int32_t b = (1 - isig) & ((v < 0) | (v >= C32));
      const int32_t ok = (1 - isig) & (1 - b);
      ig += isig; bad |= b;
      valid[j] = (IS)ok; y[j] = (IS)(v & -ok);
    }
    ign += ig; anybad |= bad != 0;
    return;
  }
  int64_t ig = 0, bad = 0;
  for (int j = 0; j < nb; ++j) {
    const int64_t v = (int64_t)p[j];
    const int64_t wr = label_wraps<L>(v);
    const int64_t isig = (v == ignore) & (1 - wr);
    const int64_t b = (1 - isig) & ((v < 0) | (v >= C));
    const int64_t ok = (1 - isig) & (1 - b);
    ig += isig; bad |= b;
    valid[j] = (IS)ok; y[j] = (IS)(v & -ok);
  }
  ign += ig; anybad |= bad != 0;
}
template <class IS>
LD_INLINE void labels_block(const void* base, int tdt, int64_t e0, int nb, int64_t ignore, int64_t C,
                            IS* y, IS* valid, int64_t& ign, bool& anybad) {
  switch (tdt) {
    case U8: case LBOOL: labels_block_t<uint8_t>(base, e0, nb, ignore, C, y, valid, ign, anybad); break;
    case I8: labels_block_t<int8_t>(base, e0, nb, ignore, C, y, valid, ign, anybad); break;
    case U16: labels_block_t<uint16_t>(base, e0, nb, ignore, C, y, valid, ign, anybad); break;
    case I16: labels_block_t<int16_t>(base, e0, nb, ignore, C, y, valid, ign, anybad); break;
    case U32: labels_block_t<uint32_t>(base, e0, nb, ignore, C, y, valid, ign, anybad); break;
    case I32: labels_block_t<int32_t>(base, e0, nb, ignore, C, y, valid, ign, anybad); break;
    case U64: labels_block_t<uint64_t>(base, e0, nb, ignore, C, y, valid, ign, anybad); break;
    default: labels_block_t<int64_t>(base, e0, nb, ignore, C, y, valid, ign, anybad); break;
  }
}

LD_INLINE void load_labels(const void* base, int tdt, int64_t e0, int nb, int64_t* out) {
  switch (tdt) {
    case U8: case LBOOL: load_labels_t<uint8_t>(base, e0, nb, out); break;
    case I8: load_labels_t<int8_t>(base, e0, nb, out); break;
    case U16: load_labels_t<uint16_t>(base, e0, nb, out); break;
    case I16: load_labels_t<int16_t>(base, e0, nb, out); break;
    case U32: load_labels_t<uint32_t>(base, e0, nb, out); break;
    case I32: load_labels_t<int32_t>(base, e0, nb, out); break;
    case U64: load_labels_t<uint64_t>(base, e0, nb, out); break;
    default: load_labels_t<int64_t>(base, e0, nb, out); break;
  }
}
template <class T, class F> LD_INLINE void cvt_t(const void* base, int64_t off, int n, F* out, int64_t os) {
  const T* p = (const T*)base + off;
  for (int i = 0; i < n; ++i) out[i * os] = (F)p[i];
}
// n values of a float (DType) array or, when !is_float, a label (LType) array, starting at off.
template <class F> LD_INLINE void load_cvt(const void* base, int dt, bool is_float, int64_t off, int n, F* out, int64_t os) {
  if (is_float) {
    switch (dt) {
      case F16: cvt_t<_Float16>(base, off, n, out, os); return;
      case BF16: cvt_t<bf16>(base, off, n, out, os); return;
      case F32: cvt_t<float>(base, off, n, out, os); return;
      default: cvt_t<double>(base, off, n, out, os); return;
    }
  }
  switch (dt) {
    case U8: case LBOOL: cvt_t<uint8_t>(base, off, n, out, os); return;
    case I8: cvt_t<int8_t>(base, off, n, out, os); return;
    case U16: cvt_t<uint16_t>(base, off, n, out, os); return;
    case I16: cvt_t<int16_t>(base, off, n, out, os); return;
    case U32: cvt_t<uint32_t>(base, off, n, out, os); return;
    case I32: cvt_t<int32_t>(base, off, n, out, os); return;
    case U64: cvt_t<uint64_t>(base, off, n, out, os); return;
    default: cvt_t<int64_t>(base, off, n, out, os); return;
  }
}
