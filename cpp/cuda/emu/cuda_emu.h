// Host emulation of the CUDA features used by ../kernels.cu, to run the real kernel source on a
// machine without a GPU (tests only; see build_emu.py). One std::thread per CUDA thread of a block,
// blocks of a launch run one after another (so `__shared__` becomes `static`), __syncthreads is a
// std::barrier and every warp collective (__syncwarp, __ballot_sync, __shfl*_sync,
// __match_any_sync) is a real rendezvous of exactly the lanes named in its mask, so divergence and
// mask mistakes deadlock or give wrong results here as they would on a GPU. Not emulated: the
// memory model (all memory is coherent host memory) and timing.
#pragma once
#include <math.h>

#include <atomic>
#include <barrier>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)

struct dim3 { unsigned x = 0, y = 0, z = 0; };
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

struct uint4 { unsigned x, y, z, w; };
inline uint4 __ldcs(const uint4* p) { return *p; }

// ---- half / bfloat16 ----------------------------------------------------------------------------
struct __half { uint16_t x; };
struct __nv_bfloat16 { uint16_t x; };
inline float __half2float(__half h) { _Float16 f; std::memcpy(&f, &h.x, 2); return (float)f; }
inline __half __float2half_rn(float v) { _Float16 f = (_Float16)v; __half h; std::memcpy(&h.x, &f, 2); return h; }
inline float __bfloat162float(__nv_bfloat16 b) { uint32_t u = (uint32_t)b.x << 16; float f; std::memcpy(&f, &u, 4); return f; }
inline __nv_bfloat16 __float2bfloat16_rn(float v) {
  uint32_t u; std::memcpy(&u, &v, 4);
  __nv_bfloat16 b;
  if ((u & 0x7fffffffu) > 0x7f800000u) { b.x = 0x7fc0; return b; }  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  b.x = (uint16_t)(u >> 16);
  return b;
}

// ---- math ---------------------------------------------------------------------------------------
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline long long __double_as_longlong(double d) { long long v; std::memcpy(&v, &d, 8); return v; }
inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }

// ---- atomics ------------------------------------------------------------------------------------
typedef unsigned long long ldemu_ull;
inline ldemu_ull atomicAdd(ldemu_ull* p, ldemu_ull v) {
  return std::atomic_ref<ldemu_ull>(*p).fetch_add(v);
}
inline ldemu_ull atomicMax(ldemu_ull* p, ldemu_ull v) {
  std::atomic_ref<ldemu_ull> a(*p);
  ldemu_ull cur = a.load();
  while (cur < v && !a.compare_exchange_weak(cur, v)) {}
  return cur;
}

// ---- launch context -----------------------------------------------------------------------------
namespace ldemu {

struct Warp {
  std::mutex m;
  std::condition_variable cv;
  struct Rdv { int arrived = 0; unsigned gen = 0; };
  std::map<unsigned, Rdv> rdv;          // one rendezvous per member mask
  // Exchange slots: 0 for shuffles and ballots (always the full warp in kernels.cu), 1 for match
  // keys. A collective writes its slot, meets the others, reads, and meets again before any lane
  // can overwrite the slots in its next collective.
  uint64_t slots[2][32] = {};
  void sync(unsigned mask) {
    std::unique_lock<std::mutex> lk(m);
    Rdv& r = rdv[mask];
    const unsigned g = r.gen;
    if (++r.arrived == __builtin_popcount(mask)) {
      r.arrived = 0;
      r.gen++;
      cv.notify_all();
    } else {
      cv.wait(lk, [&] { return r.gen != g; });
    }
  }
};

struct Block {
  explicit Block(unsigned nt) : bar((std::ptrdiff_t)nt), warps((nt + 31) / 32) {}
  std::barrier<> bar;
  std::vector<Warp> warps;
};

inline thread_local Block* cur = nullptr;
inline std::vector<unsigned char>& smem_buf() {
  static std::vector<unsigned char> b(64 * 1024);
  return b;
}
inline unsigned char* dyn_smem() { return smem_buf().data(); }

inline int lane() { return (int)(threadIdx.x & 31); }
inline Warp& warp() { return cur->warps[threadIdx.x >> 5]; }

template <class T> inline uint64_t bits(T v) { uint64_t u = 0; std::memcpy(&u, &v, sizeof(T)); return u; }
template <class T> inline T unbits(uint64_t u) { T v; std::memcpy(&v, &u, sizeof(T)); return v; }

inline void check_member(unsigned mask) {
  if (!(mask >> lane() & 1u)) { std::fprintf(stderr, "emu: lane not in its own mask\n"); std::abort(); }
}

// Persistent workers (thread creation per launch dominated the run time): run(n, f) calls f(i)
// on n workers concurrently and returns when all are done.
struct Pool {
  std::mutex m;
  std::condition_variable cv, done_cv;
  std::function<void(unsigned)> job;
  unsigned need = 0, finished = 0;
  uint64_t gen = 0;
  unsigned size = 0;
  void worker(unsigned id) {
    uint64_t seen = 0;
    for (;;) {
      std::function<void(unsigned)> j;
      {
        std::unique_lock<std::mutex> lk(m);
        cv.wait(lk, [&] { return gen != seen; });
        seen = gen;
        if (id >= need) continue;
        j = job;
      }
      j(id);
      std::lock_guard<std::mutex> lk(m);
      if (++finished == need) done_cv.notify_all();
    }
  }
  void run(unsigned n, std::function<void(unsigned)> f) {
    std::unique_lock<std::mutex> lk(m);
    while (size < n) std::thread([this, id = size++] { worker(id); }).detach();
    job = std::move(f); need = n; finished = 0; ++gen;
    cv.notify_all();
    done_cv.wait(lk, [&] { return finished == need; });
  }
};
inline Pool& pool() { static Pool* p = new Pool; return *p; }  // never destroyed (detached)

template <class K> struct Launch {
  K k; unsigned grid, block; size_t smem;
  template <class... A> void operator()(A... args) const {
    if (smem > smem_buf().size()) { std::fprintf(stderr, "emu: smem too large\n"); std::abort(); }
    gridDim.x = grid; blockDim.x = block;
    auto blk = std::make_unique<Block>(block);
    Block* bp = blk.get();
    const K kk = k;
    const unsigned g = grid;
    pool().run(block, [=](unsigned t) {
      threadIdx.x = t;
      cur = bp;
      for (unsigned b = 0; b < g; ++b) {
        if (t == 0) std::memset(smem_buf().data(), 0xA5, smem_buf().size());  // garbage
        bp->bar.arrive_and_wait();
        blockIdx.x = b;
        kk(args...);
        bp->bar.arrive_and_wait();
      }
    });
  }
};
template <class K> Launch<K> launch(K k, unsigned grid, unsigned block, size_t smem) {
  return Launch<K>{k, grid, block, smem};
}

}  // namespace ldemu

inline void __syncthreads() { ldemu::cur->bar.arrive_and_wait(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ldemu::check_member(mask); ldemu::warp().sync(mask); }

inline unsigned __ballot_sync(unsigned mask, bool pred) {
  ldemu::check_member(mask);
  auto& w = ldemu::warp();
  w.slots[0][ldemu::lane()] = pred ? 1 : 0;
  w.sync(mask);
  unsigned r = 0;
  for (int l = 0; l < 32; ++l)
    if ((mask >> l & 1u) && w.slots[0][l]) r |= 1u << l;
  w.sync(mask);
  return r;
}
template <class T> inline T ldemu_shfl(unsigned mask, T v, int src) {
  ldemu::check_member(mask);
  auto& w = ldemu::warp();
  w.slots[0][ldemu::lane()] = ldemu::bits(v);
  w.sync(mask);
  const T r = (mask >> src & 1u) ? ldemu::unbits<T>(w.slots[0][src]) : T{};
  w.sync(mask);
  return r;
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int o) { return ldemu_shfl(mask, v, ldemu::lane() ^ o); }
template <class T> inline T __shfl_sync(unsigned mask, T v, int src) { return ldemu_shfl(mask, v, src & 31); }
template <class T> inline unsigned __match_any_sync(unsigned mask, T key) {
  ldemu::check_member(mask);
  auto& w = ldemu::warp();
  w.slots[1][ldemu::lane()] = ldemu::bits((long long)key);
  w.sync(mask);
  unsigned r = 0;
  for (int l = 0; l < 32; ++l)
    if ((mask >> l & 1u) && w.slots[1][l] == w.slots[1][ldemu::lane()]) r |= 1u << l;
  w.sync(mask);
  return r;
}

// ---- runtime API subset ------------------------------------------------------------------------
typedef int cudaError_t;
typedef void* cudaStream_t;
constexpr cudaError_t cudaSuccess = 0;
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorName(cudaError_t) { return "emu"; }
inline const char* cudaGetErrorString(cudaError_t) { return "emu"; }
inline int& ldemu_sm_count() { static int n = 3; return n; }
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) { *v = ldemu_sm_count(); return cudaSuccess; }
template <class K> inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, K, int, size_t) {
  *n = 1;
  return cudaSuccess;
}
struct cudaDeviceProp { char name[256]; int major, minor, multiProcessorCount; size_t totalGlobalMem; };
inline cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::snprintf(p->name, sizeof p->name, "lossdiag host emulator");
  p->major = 0; p->minor = 0; p->multiProcessorCount = ldemu_sm_count(); p->totalGlobalMem = 0;
  return cudaSuccess;
}
inline cudaError_t cudaRuntimeGetVersion(int* v) { *v = 0; return cudaSuccess; }
inline cudaError_t cudaDriverGetVersion(int* v) { *v = 0; return cudaSuccess; }
