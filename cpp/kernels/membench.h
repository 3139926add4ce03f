// Memory-speed references for bench/ (read, copy).
// A part of kernels_impl.h, which includes the parts in order; not a standalone header.

// Memory-speed references for the benchmark: a multi-threaded read and a read+write copy.
double mem_read_entry(const void* p, int64_t nbytes, int nthreads) {
  const uint64_t* q = (const uint64_t*)p;
  const int64_t n = nbytes / 8;
  uint64_t total = 0;
  const int64_t chunks = (n + 4095) / 4096;
  if (nthreads > chunks) nthreads = chunks < 1 ? 1 : (int)chunks;
#pragma omp parallel for reduction(+ : total) schedule(static) num_threads(nthreads)
  for (int64_t c = 0; c < (n + 4095) / 4096; ++c) {
    uint64_t acc[8] = {};
    const int64_t i1 = imin(n, (c + 1) * 4096);
    int64_t i = c * 4096;
    for (; i + 8 <= i1; i += 8)
      for (int j = 0; j < 8; ++j) acc[j] += q[i + j];
    for (; i < i1; ++i) acc[0] += q[i];
    for (int j = 0; j < 8; ++j) total += acc[j];
  }
  return (double)total;
}

void mem_copy_entry(void* dst, const void* src, int64_t nbytes, int nthreads) {
  const int64_t chunk = 1 << 20, n = (nbytes + chunk - 1) / chunk;
  if (nthreads > n) nthreads = n < 1 ? 1 : (int)n;
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t c = 0; c < n; ++c) {
    const int64_t o = c * chunk;
    memcpy((char*)dst + o, (const char*)src + o, (size_t)imin(chunk, nbytes - o));
  }
}
