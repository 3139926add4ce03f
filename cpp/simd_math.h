// Branch-free exp / log / log1p that GCC and Clang auto-vectorise. Included *inside* an ISA
// namespace (see isa_*.cpp), so every instruction-set build gets its own copy; libm's scalar calls
// would cap the kernels far below memory bandwidth.
// Accuracy: float versions within ~2 ulp, double within ~2 ulp on the ranges used here.
// No FMA contraction (-ffp-contract=off), so every ISA build rounds identically.

#define LD_INLINE inline __attribute__((always_inline))

// Fused multiply-add where the build has FMA (explicit, so contraction never depends on how an
// expression happens to be used in one template instantiation or another).
#if defined(__FMA__)
LD_INLINE float fmadd(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
LD_INLINE double fmadd(double a, double b, double c) { return __builtin_fma(a, b, c); }
#else
LD_INLINE float fmadd(float a, float b, float c) { return a * b + c; }
LD_INLINE double fmadd(double a, double b, double c) { return a * b + c; }
#endif

LD_INLINE uint32_t bits(float x) { uint32_t u; __builtin_memcpy(&u, &x, 4); return u; }
LD_INLINE float fbits(uint32_t u) { float x; __builtin_memcpy(&x, &u, 4); return x; }
LD_INLINE uint64_t bits(double x) { uint64_t u; __builtin_memcpy(&u, &x, 8); return u; }
LD_INLINE double fbits(uint64_t u) { double x; __builtin_memcpy(&x, &u, 8); return x; }

// exp(x). Inputs above ~88 (float) / ~709 (double) are clamped (callers pass x <= 0); inputs below
// the smallest normal's log give exactly 0, so exp(-inf) = 0; NaN propagates.
// exp(x) for x <= 0 (or NaN): the softmax case. Cody-Waite reduction to r in [-ln2/2, ln2/2],
// then a degree-6 polynomial fitted for relative error on that interval (c0 = 1, so exp(0) is
// exactly 1). Its truncation error is 2e-9, far below float rounding; simulated in float over
// [-87, 0] the whole function is within 1.05 ulp of exp, as the Cephes degree-7 form it replaced
// (1.01 ulp), with one multiply-add fewer (the multiply-add units bound the exp pass when the
// logits are cache-resident).
// Coefficients, highest degree first; the scalar and portable float exps use them (the AVX-512
// one uses a table, below).
constexpr float kExpPolyF[7] = {1.3843653724e-3f, 8.3741554990e-3f, 4.1668001562e-2f,
                                1.6666431725e-1f, 4.9999994040e-1f, 1.0f, 1.0f};
LD_INLINE float ld_exp_neg(float x) {
  const float lo = -87.33654f, magic = 12582912.0f;  // 1.5 * 2^23
  float xc = x < lo ? lo : x;  // NaN is kept
  float t = fmadd(xc, 1.44269504088896341f, magic);
  float n = t - magic;  // round(x / ln2)
  int32_t ni = (int32_t)(bits(t) - bits(magic));
  float r = fmadd(n, -0.693359375f, xc);  // Cody-Waite: ln2 = hi + lo
  r = fmadd(n, 2.12194440e-4f, r);
  float p = kExpPolyF[0];
  for (int i = 1; i < 7; ++i) p = fmadd(p, r, kExpPolyF[i]);
  float res = p * fbits((uint32_t)(ni + 127) << 23);
  return x < lo ? 0.0f : res;
}
// exp(x) for any x: inputs above 88 are clamped (no inf).
LD_INLINE float ld_exp(float x) {
  const float hi = 88.0f;
  return ld_exp_neg(x > hi ? hi : x);
}

LD_INLINE double ld_exp(double x) {
  const double lo = -708.3964185322641, hi = 709.0, magic = 6755399441055744.0;  // 1.5 * 2^52
  double xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;
  double t = fmadd(xc, 1.4426950408889634074, magic);
  double n = t - magic;
  int64_t ni = (int64_t)(bits(t) - bits(magic));
  double r = fmadd(n, -6.93147180369123816490e-01, xc);
  r = fmadd(n, -1.90821492927058770002e-10, r);
  double p = 1.6059043836821614599e-10;  // Taylor to degree 13
  p = fmadd(p, r, 2.0876756987868098979e-09);
  p = fmadd(p, r, 2.5052108385441718775e-08);
  p = fmadd(p, r, 2.7557319223985890653e-07);
  p = fmadd(p, r, 2.7557319223985890653e-06);
  p = fmadd(p, r, 2.4801587301587301587e-05);
  p = fmadd(p, r, 1.9841269841269841270e-04);
  p = fmadd(p, r, 1.3888888888888888889e-03);
  p = fmadd(p, r, 8.3333333333333333333e-03);
  p = fmadd(p, r, 4.1666666666666666667e-02);
  p = fmadd(p, r, 1.6666666666666666667e-01);
  p = fmadd(p, r, 0.5);
  p = fmadd(p, r, 1.0);
  p = fmadd(p, r, 1.0);
  double res = p * fbits((uint64_t)(ni + 1023) << 52);
  return x < lo ? 0.0 : res;
}
LD_INLINE double ld_exp_neg(double x) { return ld_exp(x); }

// log(u) for finite positive normal u; +inf and NaN propagate. Uses log(f) = 2 atanh(z),
// z = (f - 1) / (f + 1) with f in [sqrt(1/2), sqrt(2)).
LD_INLINE float ld_log(float u) {
  // Cephes-style: u = 2^e * f, f in [sqrt(1/2), sqrt(2)), polynomial in x = f - 1 (no division).
  uint32_t b = bits(u);
  int32_t e = (int32_t)((b >> 23) & 0xffu) - 126;
  float f = fbits((b & 0x7fffffu) | 0x3f000000u);  // [0.5, 1)
  bool small = f < 0.707106781186547524f;
  e = small ? e - 1 : e;
  float x = (small ? f + f : f) - 1.0f;
  float z = x * x;
  float y = 7.0376836292e-2f;
  y = fmadd(y, x, -1.1514610310e-1f);
  y = fmadd(y, x, 1.1676998740e-1f);
  y = fmadd(y, x, -1.2420140846e-1f);
  y = fmadd(y, x, 1.4249322787e-1f);
  y = fmadd(y, x, -1.6668057665e-1f);
  y = fmadd(y, x, 2.0000714765e-1f);
  y = fmadd(y, x, -2.4999993993e-1f);
  y = fmadd(y, x, 3.3333331174e-1f);
  y = y * x * z;
  float fe = (float)e;
  y = fmadd(fe, -2.12194440e-4f, y);
  y = fmadd(z, -0.5f, y);
  float res = fmadd(fe, 0.693359375f, x + y);
  return (u - u == 0.0f) ? res : u;
}

LD_INLINE double ld_log(double u) {
  uint64_t b = bits(u);
  int64_t e = (int64_t)((b >> 52) & 0x7ffu) - 1023;
  double f = fbits((uint64_t)((b & 0xfffffffffffffull) | 0x3ff0000000000000ull));
  bool big = f > 1.4142135623730951;
  f = big ? f * 0.5 : f;
  e = big ? e + 1 : e;
  double z = (f - 1.0) / (f + 1.0), z2 = z * z;
  double p = 2.0 / 19;
  p = fmadd(p, z2, 2.0 / 17);
  p = fmadd(p, z2, 2.0 / 15);
  p = fmadd(p, z2, 2.0 / 13);
  p = fmadd(p, z2, 2.0 / 11);
  p = fmadd(p, z2, 2.0 / 9);
  p = fmadd(p, z2, 2.0 / 7);
  p = fmadd(p, z2, 2.0 / 5);
  p = fmadd(p, z2, 2.0 / 3);
  p = fmadd(p, z2, 2.0);
  double fe = (double)e;
  double res = fe * 6.93147180369123816490e-01 + (z * p + fe * 1.90821492927058770002e-10);
  return (u - u == 0.0) ? res : u;
}

// log1p(s) for s >= 0 (Kahan: log(u) * s / (u - 1), exact when u rounds to 1).
template <class F> LD_INLINE F ld_log1p(F s) {
  F u = F(1) + s;
  F d = u - F(1);
  F r = ld_log(u) * (s / (d == F(0) ? F(1) : d));
  return d == F(0) ? s : r;
}

// ---------------------------------------------------------------------------------------------
// Explicit vectors (GCC/Clang vector extensions) for the hot loops: accumulators stay in
// registers while the loop runs over the classes. LD_VW is the register width of this build.
typedef float vf __attribute__((vector_size(LD_VW)));
typedef int32_t vi __attribute__((vector_size(LD_VW)));
typedef double vd __attribute__((vector_size(LD_VW)));
typedef int64_t vl __attribute__((vector_size(LD_VW)));
typedef int32_t vi_h __attribute__((vector_size(LD_VW / 2)));  // int32 lanes of a double vector

template <class F> struct VecT;
template <> struct VecT<float> { using V = vf; using I = vi; using IS = int32_t; static constexpr int N = LD_VW / 4; };
template <> struct VecT<double> { using V = vd; using I = vl; using IS = int64_t; static constexpr int N = LD_VW / 8; };

LD_INLINE vf vfma(vf a, vf b, vf c) { return LD_VFMA_PS(a, b, c); }
LD_INLINE vd vfma(vd a, vd b, vd c) { return LD_VFMA_PD(a, b, c); }

#if LD_VW == 64 && defined(__AVX512F__)
// AVX-512: exp(x) = 2^k * 2^(j/16) * exp(r), n = k + j/16 = x/ln2 rounded to a multiple of 1/16,
// |r| <= ln2/32. The 16 powers 2^(j/16) sit in one register (vpermps), so a degree-3 polynomial
// suffices: 7 multiply-adds per vector instead of 9 (with the logits cache-resident the exp pass
// of evaluate is bound by the multiply-add pipes; 10 % faster in such a loop on Zen 4). vscalef
// applies 2^k (floor(n)) and underflows to exactly 0 for very negative inputs. Within 1.0 ulp of
// exp for every float in [-104, 0] whose exp is a normal float (checked exhaustively; the
// polynomial above: 1.05 ulp); exp(0) is exactly 1.
constexpr float kExp2Sixteenths[16] = {
    1.000000000e+00f, 1.044273734e+00f, 1.090507746e+00f, 1.138788581e+00f,
    1.189207077e+00f, 1.241857767e+00f, 1.296839595e+00f, 1.354255557e+00f,
    1.414213538e+00f, 1.476826191e+00f, 1.542210817e+00f, 1.610490322e+00f,
    1.681792855e+00f, 1.756252170e+00f, 1.834008098e+00f, 1.915206552e+00f};
// `keep`: lanes whose result is kept; the others are 0. The mask rides on the last multiply-add:
// a masked add into a sum instead takes a slot of the multiply-add pipes on Zen 4 (evaluate's exp
// loop in L1: 10.9 -> 10.4 cycles per 16 values).
LD_INLINE vf vexp_neg_keep(vf x, __mmask16 keep) {
  __m512 xv = _mm512_max_ps(_mm512_set1_ps(-104.0f), (__m512)x);  // NaN is kept (2nd operand)
  // x/ln2 + 1.5 * 2^19, rounded once by the multiply-add: the float grid there is 1/16, so this
  // is n + 1.5 * 2^19 exactly, with 16 n mod 16 = j in its four lowest bits (vpermps' index).
  // (One multiply-add and one subtraction instead of a multiply, a vrndscale and an addition.)
  const __m512 t = _mm512_fmadd_ps(xv, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(786432.0f));
  const __m512 n = _mm512_sub_ps(t, _mm512_set1_ps(786432.0f));
  // Cody-Waite: 16 n * 355 < 2^24, so n * ln2_hi is exact.
  __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693359375f), xv);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
  const __m512 T = _mm512_permutexvar_ps(_mm512_castps_si512(t), _mm512_loadu_ps(kExp2Sixteenths));
  // exp(r) - 1 = r (1 + r (c2 + c3 r)), minimax for relative error on |r| <= 1.02 ln2/32
  // (1.7e-9); T + T (exp(r) - 1) rounds once.
  __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(0.16666722f), r, _mm512_set1_ps(0.5000168f));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f));
  q = _mm512_mul_ps(q, r);
  return (vf)_mm512_scalef_ps(_mm512_maskz_fmadd_ps(keep, T, q, T), n);
}
LD_INLINE vf vexp_neg(vf x) { return vexp_neg_keep(x, (__mmask16)0xffff); }
LD_INLINE vd vexp_neg(vd x) {
  __m512d xv = _mm512_max_pd(_mm512_set1_pd(-746.0), (__m512d)x);
  __m512d n = _mm512_roundscale_pd(_mm512_mul_pd(xv, _mm512_set1_pd(1.4426950408889634074)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512d r = _mm512_fmadd_pd(n, _mm512_set1_pd(-6.93147180369123816490e-01), xv);
  r = _mm512_fmadd_pd(n, _mm512_set1_pd(-1.90821492927058770002e-10), r);
  const double c[] = {2.0876756987868098979e-09, 2.5052108385441718775e-08,
                      2.7557319223985890653e-07, 2.7557319223985890653e-06,
                      2.4801587301587301587e-05, 1.9841269841269841270e-04,
                      1.3888888888888888889e-03, 8.3333333333333333333e-03,
                      4.1666666666666666667e-02, 1.6666666666666666667e-01, 0.5, 1.0, 1.0};
  __m512d p = _mm512_set1_pd(1.6059043836821614599e-10);
  for (double k : c) p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(k));
  return (vd)_mm512_scalef_pd(p, n);
}
// exp(x), but 0 where x == 0 (the row's first maximum, kept out of the sums; NaN is kept).
LD_INLINE vf vexp_neg_nz(vf x) {
  return vexp_neg_keep(x, _mm512_cmp_ps_mask((__m512)x, _mm512_setzero_ps(), _CMP_NEQ_UQ));
}
LD_INLINE vd vexp_neg_nz(vd x) {
  return (vd)_mm512_maskz_mov_pd(_mm512_cmp_pd_mask((__m512d)x, _mm512_setzero_pd(), _CMP_NEQ_UQ),
                                 (__m512d)vexp_neg(x));
}
// sv += exp(d) where d != 0; ties += 1 where d == 0: sum_but_max(d, vexp_neg(d), sv, ties) with
// the mask on the exp's last multiply-add (for sums whose terms are not needed one by one).
LD_INLINE void sum_exp_but_max(vf d, vf& sv, vi& ties) {
  const __mmask16 nz = _mm512_cmp_ps_mask((__m512)d, _mm512_setzero_ps(), _CMP_NEQ_UQ);
  sv = (vf)_mm512_add_ps((__m512)sv, (__m512)vexp_neg_keep(d, nz));
  ties = (vi)_mm512_mask_sub_epi32((__m512i)ties, (__mmask16)~nz, (__m512i)ties,
                                   _mm512_set1_epi32(-1));
}
// sv += e where d != 0; ties += 1 where d == 0 (NaN: d != 0). Masked operations: two
// instructions instead of four.
LD_INLINE void sum_but_max(vf d, vf e, vf& sv, vi& ties) {
  const __mmask16 z = _mm512_cmp_ps_mask((__m512)d, _mm512_setzero_ps(), _CMP_EQ_OQ);
  sv = (vf)_mm512_mask_add_ps((__m512)sv, (__mmask16)~z, (__m512)sv, (__m512)e);
  ties = (vi)_mm512_mask_sub_epi32((__m512i)ties, z, (__m512i)ties, _mm512_set1_epi32(-1));
}
LD_INLINE void sum_but_max(vd d, vd e, vd& sv, vl& ties) {
  const __mmask8 z = _mm512_cmp_pd_mask((__m512d)d, _mm512_setzero_pd(), _CMP_EQ_OQ);
  sv = (vd)_mm512_mask_add_pd((__m512d)sv, (__mmask8)~z, (__m512d)sv, (__m512d)e);
  ties = (vl)_mm512_mask_sub_epi64((__m512i)ties, z, (__m512i)ties, _mm512_set1_epi64(-1));
}
// sv += e where d != 0 (ties counted elsewhere).
LD_INLINE void sum_nonzero_d(vf d, vf e, vf& sv) {
  const __mmask16 nz = _mm512_cmp_ps_mask((__m512)d, _mm512_setzero_ps(), _CMP_NEQ_UQ);
  sv = (vf)_mm512_mask_add_ps((__m512)sv, nz, (__m512)sv, (__m512)e);
}
LD_INLINE void sum_nonzero_d(vd d, vd e, vd& sv) {
  const __mmask8 nz = _mm512_cmp_pd_mask((__m512d)d, _mm512_setzero_pd(), _CMP_NEQ_UQ);
  sv = (vd)_mm512_mask_add_pd((__m512d)sv, nz, (__m512d)sv, (__m512d)e);
}
#else
// Portable: same algorithm and constants as the scalar ld_exp_neg.
LD_INLINE vf vexp_neg(vf x) {
  const vf lo = vf{} + -87.33654f, magic = vf{} + 12582912.0f;
  vf xc = x < lo ? lo : x;
  vf t = vfma(xc, vf{} + 1.44269504088896341f, magic);
  vf n = t - magic;
  vi ni = (vi)t - (vi)magic;
  vf r = vfma(n, vf{} + -0.693359375f, xc);
  r = vfma(n, vf{} + 2.12194440e-4f, r);
  vf p = vf{} + kExpPolyF[0];
  for (int i = 1; i < 7; ++i) p = vfma(p, r, vf{} + kExpPolyF[i]);
  vf res = p * (vf)((ni + 127) << 23);
  return x < lo ? vf{} : res;
}

LD_INLINE vd vexp_neg(vd x) {
  const vd lo = vd{} + -708.3964185322641, magic = vd{} + 6755399441055744.0;
  vd xc = x < lo ? lo : x;
  vd t = vfma(xc, vd{} + 1.4426950408889634074, magic);
  vd n = t - magic;
  vl ni = (vl)t - (vl)magic;
  vd r = vfma(n, vd{} + -6.93147180369123816490e-01, xc);
  r = vfma(n, vd{} + -1.90821492927058770002e-10, r);
  vd p = vd{} + 1.6059043836821614599e-10;
  p = vfma(p, r, vd{} + 2.0876756987868098979e-09);
  p = vfma(p, r, vd{} + 2.5052108385441718775e-08);
  p = vfma(p, r, vd{} + 2.7557319223985890653e-07);
  p = vfma(p, r, vd{} + 2.7557319223985890653e-06);
  p = vfma(p, r, vd{} + 2.4801587301587301587e-05);
  p = vfma(p, r, vd{} + 1.9841269841269841270e-04);
  p = vfma(p, r, vd{} + 1.3888888888888888889e-03);
  p = vfma(p, r, vd{} + 8.3333333333333333333e-03);
  p = vfma(p, r, vd{} + 4.1666666666666666667e-02);
  p = vfma(p, r, vd{} + 1.6666666666666666667e-01);
  p = vfma(p, r, vd{} + 0.5);
  p = vfma(p, r, vd{} + 1.0);
  p = vfma(p, r, vd{} + 1.0);
  vd res = p * (vd)((ni + 1023) << 52);
  return x < lo ? vd{} : res;
}

template <class V, class I> LD_INLINE void sum_but_max(V d, V e, V& sv, I& ties) {
  const I z = d == 0;
  sv += (V)((I)e & ~z);
  ties -= z;  // masks are -1
}
template <class V> LD_INLINE V vexp_neg_nz(V x) {
  using I = decltype(x == 0);
  return (V)((I)vexp_neg(x) & ~(x == 0));
}
template <class V> LD_INLINE void sum_nonzero_d(V d, V e, V& sv) {
  using I = decltype(d == 0);
  sv += (V)((I)e & ~(d == 0));
}
#endif
// (vd on AVX-512, every type elsewhere)
template <class V, class I> LD_INLINE void sum_exp_but_max(V d, V& sv, I& ties) {
  sum_but_max(d, vexp_neg(d), sv, ties);
}

template <class V> LD_INLINE V vload(const void* p) { V v; __builtin_memcpy(&v, p, sizeof(V)); return v; }
// True when any lane of an integer (mask) vector is nonzero.
template <class V> LD_INLINE bool vany(V m) {
#if LD_VW == 64 && defined(__AVX512F__)
  return _mm512_test_epi64_mask((__m512i)m, (__m512i)m) != 0;
#elif LD_VW == 32 && defined(__AVX__)
  return !_mm256_testz_si256((__m256i)m, (__m256i)m);
#else
  int64_t w[sizeof(V) / 8]; __builtin_memcpy(w, &m, sizeof(V));
  int64_t r = 0;
  for (int64_t x : w) r |= x;
  return r != 0;
#endif
}
template <class V> LD_INLINE void vstore(void* p, V v) { __builtin_memcpy(p, &v, sizeof(V)); }

// Half h (0: low lanes, 1: high lanes) of a float vector widened to doubles. GCC 12 lowers
// __builtin_convertvector between these widths into extract/convert/insert sequences, three
// times the instructions.
#if LD_VW == 64 && defined(__AVX512F__)
LD_INLINE vd cvt_half(vf v, int h) {
  const __m256 x = h ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd((__m512)v), 1))
                     : _mm512_castps512_ps256((__m512)v);
  return (vd)_mm512_cvtps_pd(x);
}
#elif LD_VW == 32 && defined(__AVX__)
LD_INLINE vd cvt_half(vf v, int h) {
  return (vd)_mm256_cvtps_pd(h ? _mm256_extractf128_ps((__m256)v, 1) : _mm256_castps256_ps128((__m256)v));
}
#else
LD_INLINE vd cvt_half(vf v, int h) {
  vd r;
  for (int i = 0; i < LD_VW / 8; ++i) r[i] = (double)v[h * (LD_VW / 8) + i];
  return r;
}
#endif

// log(u) and log1p(s) on double vectors (same algorithm as the scalar ld_log(double)).
LD_INLINE vd vlog(vd u) {
  vl b = (vl)u;
  vl e = ((b >> 52) & 0x7ff) - 1023;
  vd f = (vd)((b & 0xfffffffffffffll) | 0x3ff0000000000000ll);
  vl big = f > 1.4142135623730951;
  f = big ? f * 0.5 : f;
  e = e - big;  // big is -1 where true
  vd z = (f - 1.0) / (f + 1.0), z2 = z * z;
  vd p = vd{} + 2.0 / 19;
  const double c[] = {2.0 / 17, 2.0 / 15, 2.0 / 13, 2.0 / 11, 2.0 / 9, 2.0 / 7, 2.0 / 5, 2.0 / 3, 2.0};
  for (double k : c) p = vfma(p, z2, vd{} + k);
  vd fe = __builtin_convertvector(e, vd);
  return vfma(fe, vd{} + 6.93147180369123816490e-01, vfma(z, p, fe * 1.90821492927058770002e-10));
}
LD_INLINE vd vlog1p(vd s) {  // s >= 0
  vd u = s + 1.0;
  vd d = u - 1.0;
  vl one = d == 0.0;
  vd r = vlog(u) - (d - s) / u;
  return one ? s : r;
}
