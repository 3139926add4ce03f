// The loss surface of a logistic regression (lossdiag.landscape) and its entry point.
// A part of kernels_impl.h, which includes the parts in order; not a standalone header.

// Logistic-regression loss surface: every grid point, every sample, in one call (float64).
// X is split into two contiguous columns once so the sample loop is plain vector loads.
void surface_entry(const SurfaceArgs& a) {
  using VD = vd;
  constexpr int VN = VecT<double>::N, K = 2, STEP = VN * K;
  const int64_t n = a.n, G = a.n1 * a.n2;
  double* cols = (double*)must_alloc(2 * n + 1, sizeof(double), false, kAllocRows);
  Owned own(cols);
  double* x0 = cols; double* x1 = cols + n;
  for (int64_t k = 0; k < n; ++k) { x0[k] = a.X[2 * k]; x1[k] = a.X[2 * k + 1]; }
  const int64_t nv = n / STEP * STEP;
  int nth = a.nthreads < 1 ? 1 : a.nthreads;
  if (nth > G) nth = G < 1 ? 1 : (int)imin(G, kMaxThreads);
#pragma omp parallel for schedule(dynamic, 4) num_threads(nth) if (nth > 1)
  for (int64_t g = 0; g < G; ++g) {
    const double w1 = a.w1[g % a.n1], w2 = a.w2[g / a.n1], b = a.bias;
    VD ls[K], ac[K];
    for (int q = 0; q < K; ++q) { ls[q] = VD{}; ac[q] = VD{}; }
    for (int64_t k0 = 0; k0 < nv; k0 += STEP) {
#pragma GCC unroll 4
      for (int q = 0; q < K; ++q) {
        const VD z = vfma(vd{} + w1, vload<VD>(x0 + k0 + q * VN), vfma(vd{} + w2, vload<VD>(x1 + k0 + q * VN), vd{} + b));
        const VD y = vload<VD>(a.y + k0 + q * VN);
        const VD az = z < 0.0 ? -z : z;
        // (1 - y) z + softplus(-z) as a sum of non-negative terms (as the BCE kernel): z < 0 gives
        // -z y, z >= 0 gives (1 - y) z; (1 - y) z + max(-z, 0) cancelled to exactly 0 for
        // confident predictions, whose loss is then only the log1p term.
        const VD l = (z < 0.0 ? -z * y : (1.0 - y) * z) + vlog1p(vexp_neg(-az));
        ls[q] += l;
        ac[q] += ((z > 0.0) == (y >= 0.5)) ? VD{} + 1.0 : VD{};
      }
    }
    double L = 0, A = 0;
    for (int q = 0; q < K; ++q)
      for (int j = 0; j < VN; ++j) { L += ls[q][j]; A += ac[q][j]; }
    for (int64_t k = nv; k < n; ++k) {
      const double z = w1 * x0[k] + w2 * x1[k] + b, y = a.y[k];
      const double az = z < 0 ? -z : z;
      L += (z < 0 ? -z * y : (1.0 - y) * z) + ld_log1p(ld_exp(-az));
      A += (z > 0) == (y >= 0.5) ? 1.0 : 0.0;
    }
    a.loss[g] = n ? L / (double)n : __builtin_nan("");
    if (a.acc) a.acc[g] = n ? A / (double)n : __builtin_nan("");
  }
}
