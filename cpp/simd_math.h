// Branch-free exp / log / log1p that GCC and Clang auto-vectorise. Included *inside* an ISA
// namespace (see isa_*.cpp), so every instruction-set build gets its own copy; libm's scalar calls
// would cap the kernels far below memory bandwidth.
// Accuracy: float versions within ~2 ulp, double within ~2 ulp on the ranges used here.
// No FMA contraction (-ffp-contract=off), so every ISA build rounds identically.

#define LD_INLINE inline __attribute__((always_inline))

LD_INLINE uint32_t bits(float x) { uint32_t u; __builtin_memcpy(&u, &x, 4); return u; }
LD_INLINE float fbits(uint32_t u) { float x; __builtin_memcpy(&x, &u, 4); return x; }
LD_INLINE uint64_t bits(double x) { uint64_t u; __builtin_memcpy(&u, &x, 8); return u; }
LD_INLINE double fbits(uint64_t u) { double x; __builtin_memcpy(&x, &u, 8); return x; }

// exp(x). Inputs above ~88 (float) / ~709 (double) are clamped (callers pass x <= 0); inputs below
// the smallest normal's log give exactly 0, so exp(-inf) = 0; NaN propagates.
LD_INLINE float ld_exp(float x) {
  const float lo = -87.33654f, hi = 88.0f, magic = 12582912.0f;  // 1.5 * 2^23
  float xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;  // NaN is kept
  float t = xc * 1.44269504088896341f + magic;
  float n = t - magic;  // round(x / ln2)
  int32_t ni = (int32_t)(bits(t) - bits(magic));
  float r = xc - n * 0.693145751953125f;  // Cody-Waite: ln2 = hi + lo
  r = r - n * 1.428606765330187045e-06f;
  float p = 1.98412698412698413e-4f;  // Taylor to degree 7 on |r| <= ln2/2
  p = p * r + 1.38888888888888889e-3f;
  p = p * r + 8.33333333333333333e-3f;
  p = p * r + 4.16666666666666667e-2f;
  p = p * r + 1.66666666666666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  float res = p * fbits((uint32_t)(ni + 127) << 23);
  return x < lo ? 0.0f : res;
}

LD_INLINE double ld_exp(double x) {
  const double lo = -708.3964185322641, hi = 709.0, magic = 6755399441055744.0;  // 1.5 * 2^52
  double xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;
  double t = xc * 1.4426950408889634074 + magic;
  double n = t - magic;
  int64_t ni = (int64_t)(bits(t) - bits(magic));
  double r = xc - n * 6.93147180369123816490e-01;
  r = r - n * 1.90821492927058770002e-10;
  double p = 1.6059043836821614599e-10;  // Taylor to degree 13
  p = p * r + 2.0876756987868098979e-09;
  p = p * r + 2.5052108385441718775e-08;
  p = p * r + 2.7557319223985890653e-07;
  p = p * r + 2.7557319223985890653e-06;
  p = p * r + 2.4801587301587301587e-05;
  p = p * r + 1.9841269841269841270e-04;
  p = p * r + 1.3888888888888888889e-03;
  p = p * r + 8.3333333333333333333e-03;
  p = p * r + 4.1666666666666666667e-02;
  p = p * r + 1.6666666666666666667e-01;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  double res = p * fbits((uint64_t)(ni + 1023) << 52);
  return x < lo ? 0.0 : res;
}

// log(u) for finite positive normal u; +inf and NaN propagate. Uses log(f) = 2 atanh(z),
// z = (f - 1) / (f + 1) with f in [sqrt(1/2), sqrt(2)).
LD_INLINE float ld_log(float u) {
  uint32_t b = bits(u);
  int32_t e = (int32_t)((b >> 23) & 0xffu) - 127;
  float f = fbits((b & 0x7fffffu) | 0x3f800000u);
  bool big = f > 1.41421356f;
  f = big ? f * 0.5f : f;
  e = big ? e + 1 : e;
  float z = (f - 1.0f) / (f + 1.0f), z2 = z * z;
  float p = 0.22222222f;  // 2/9
  p = p * z2 + 0.28571429f;
  p = p * z2 + 0.4f;
  p = p * z2 + 0.66666667f;
  p = p * z2 + 2.0f;
  float fe = (float)e;
  float res = fe * 0.693145751953125f + (z * p + fe * 1.428606765330187045e-06f);
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
  p = p * z2 + 2.0 / 17;
  p = p * z2 + 2.0 / 15;
  p = p * z2 + 2.0 / 13;
  p = p * z2 + 2.0 / 11;
  p = p * z2 + 2.0 / 9;
  p = p * z2 + 2.0 / 7;
  p = p * z2 + 2.0 / 5;
  p = p * z2 + 2.0 / 3;
  p = p * z2 + 2.0;
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
