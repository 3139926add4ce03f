// Thin pybind11 layer: pointers, shapes and dtype codes in, plain numbers out. All validation,
// defaults and result objects live in Python (lossdiag/_cpu.py). Kernels run without the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.h"

namespace py = pybind11;
using namespace lossdiag;

namespace {

int g_threads = 0;

int threads() {
  if (g_threads > 0) return g_threads;
#ifdef _OPENMP
  // OMP_NUM_THREADS is not bounded by the runtime: libgomp crashes or exits the interpreter when
  // asked for tens of thousands of threads.
  const int n = omp_get_max_threads();
  return n < 1 ? 1 : (n > kMaxThreads ? kMaxThreads : n);
#else
  return 1;
#endif
}

// An unknown float dtype code would be read as float64 by the kernels' default branch: refuse it
// here, where a mismatch between the Python side and this build would otherwise corrupt memory.
void check_float_code(int code, const char* what) {
  if (code < F16 || code > BF16) throw std::invalid_argument(std::string(what) + ": unknown float dtype code");
}

// Runs a kernel without the GIL; a scratch allocation that failed becomes a MemoryError that
// says which argument made the request large.
template <class Fn> void run_kernel(Fn&& fn, int64_t C, int bins, const char* fname) {
  bool failed = false;
  AllocFailure f{0, 0};
  {
    py::gil_scoped_release nogil;
    try { fn(); } catch (const AllocFailure& e) { failed = true; f = e; }
  }
  if (!failed) return;
  char msg[400];
  const double mb = (double)f.bytes / (1 << 20);
  switch (f.what) {
    case kAllocBins:
      std::snprintf(msg, sizeof msg, "bins: %s could not allocate %.1f MiB of scratch memory for "
                    "bins=%d; use fewer bins", fname, mb, bins);
      break;
    case kAllocStats:
      std::snprintf(msg, sizeof msg, "logits: %s could not allocate %.1f MiB of scratch memory for "
                    "the statistics of C=%lld classes with bins=%d", fname, mb, (long long)C, bins);
      break;
    case kAllocSamples:
      std::snprintf(msg, sizeof msg, "per_sample: %s could not allocate %.1f MiB of scratch memory "
                    "for C=%lld classes", fname, mb, (long long)C);
      break;
    case kAllocRows:
      std::snprintf(msg, sizeof msg, "logits: %s could not allocate %.1f MiB of scratch memory "
                    "(it grows with the number of elements)", fname, mb);
      break;
    default:
      std::snprintf(msg, sizeof msg, "logits: %s could not allocate %.1f MiB of scratch memory for "
                    "C=%lld classes", fname, mb, (long long)C);
  }
  PyErr_SetString(PyExc_MemoryError, msg);
  throw py::error_already_set();
}

void check_sizes(int64_t C, int bins) {
  if (C < 1 || C > kMaxClasses)
    throw std::invalid_argument("logits: C=" + std::to_string(C) + " classes is outside [1, " +
                                std::to_string(kMaxClasses) + "]");
  if (bins < 0 || bins > kMaxBins)
    throw std::invalid_argument("bins: " + std::to_string(bins) + " is outside [1, " +
                                std::to_string(kMaxBins) + "]");
}

template <class T = void> T* ptr(const py::object& o) {
  if (o.is_none()) return nullptr;
  py::array a = py::reinterpret_borrow<py::array>(o);
  return (T*)a.mutable_data();
}
template <class T = void> const T* cptr(const py::object& o) {
  if (o.is_none()) return nullptr;
  py::array a = py::reinterpret_borrow<py::array>(o);
  return (const T*)a.data();
}

py::dict ce(py::object x, int xdt, py::object t, int tdt, bool soft, int64_t N, int64_t C,
            int64_t inner, int64_t E, int64_t S, bool rows, py::object w, int64_t ignore,
            double eps, bool probs, bool loss, bool grad, bool stats, bool topk, double gscale,
            py::object g, py::object loss_out, std::vector<int64_t> ks, int bins,
            py::object confusion, py::object class_loss, py::object class_count,
            py::object true_hist, py::object conf_hist, py::object conf_correct,
            py::object conf_sum, py::object margin_hist, bool per_sample, py::object s_loss,
            py::object s_count, py::object s_correct, py::object s_inter, py::object s_true,
            py::object s_pred, py::object class_pred, py::object class_tp) {
  check_float_code(xdt, "logits");
  if (soft) check_float_code(tdt, "target");
  CEArgs a;
  a.x = cptr(x); a.xdt = xdt; a.t = cptr(t); a.tdt = tdt; a.soft = soft;
  a.N = N; a.C = C; a.inner = inner; a.E = E; a.S = S; a.rows = rows;
  a.w = cptr<double>(w); a.ignore = ignore; a.eps = eps; a.probs = probs;
  a.loss = loss; a.grad = grad; a.stats = stats; a.topk = topk; a.gscale = gscale;
  a.g = ptr(g); a.loss_out = ptr(loss_out);
  if (ks.size() > (size_t)kMaxTopK) throw std::invalid_argument("top_k: at most 8 values");
  a.nk = (int)ks.size();
  for (size_t i = 0; i < ks.size(); ++i) a.ks[i] = ks[i];
  a.bins = bins;
  a.confusion = ptr<int64_t>(confusion); a.class_loss = ptr<double>(class_loss);
  a.class_count = ptr<int64_t>(class_count); a.true_hist = ptr<int64_t>(true_hist);
  a.conf_hist = ptr<int64_t>(conf_hist); a.conf_correct = ptr<int64_t>(conf_correct);
  a.conf_sum = ptr<double>(conf_sum); a.margin_hist = ptr<int64_t>(margin_hist);
  a.per_sample = per_sample; a.s_loss = ptr<double>(s_loss); a.s_count = ptr<int64_t>(s_count);
  a.s_correct = ptr<int64_t>(s_correct); a.s_inter = ptr<int64_t>(s_inter);
  a.s_true = ptr<int64_t>(s_true); a.s_pred = ptr<int64_t>(s_pred);
  a.class_pred = ptr<int64_t>(class_pred); a.class_tp = ptr<int64_t>(class_tp);
  a.nthreads = threads();
  check_sizes(C, bins);
  CEResult r;
  run_kernel([&] { kernels().ce(a, r); }, C, bins, stats ? "evaluate" : "cross_entropy");
  py::dict d;
  d["nll_sum"] = r.nll_sum; d["smooth_sum"] = r.smooth_sum; d["wsum"] = r.wsum;
  d["count"] = r.count; d["ignored"] = r.ignored; d["nonfinite"] = r.nonfinite;
  d["nonfinite_rows"] = r.nonfinite_rows;
  py::list corr;
  for (int i = 0; i < a.nk; ++i) corr.append(r.correct[i]);
  d["correct"] = corr;
  d["true_prob_sum"] = r.true_prob_sum; d["entropy_sum"] = r.entropy_sum;
  d["below_inv_e"] = r.below_inv_e;
  d["bad"] = r.bad; d["bad_value"] = r.bad_value; d["bad_index"] = r.bad_index;
  return d;
}

py::dict bce(py::object x, int xdt, py::object t, int tdt, bool tfloat, int64_t E,
             py::object pw, int64_t pw_inner, bool probs, bool loss, bool grad, bool stats,
             double threshold, double gscale, py::object g, py::object loss_out, int bins,
             py::object confusion, py::object class_loss, py::object class_count,
             py::object true_hist, py::object conf_hist, py::object conf_correct,
             py::object conf_sum, py::object margin_hist, py::object prob_hist) {
  check_float_code(xdt, "logits");
  if (tfloat) check_float_code(tdt, "target");
  BCEArgs a;
  a.x = cptr(x); a.xdt = xdt; a.t = cptr(t); a.tdt = tdt; a.tfloat = tfloat; a.E = E;
  a.pw = cptr<double>(pw);
  a.pw_len = pw.is_none() ? 0 : (int64_t)py::len(pw);
  a.pw_inner = pw_inner; a.probs = probs; a.loss = loss; a.grad = grad; a.stats = stats;
  a.threshold = threshold; a.gscale = gscale; a.g = ptr(g); a.loss_out = ptr(loss_out);
  a.bins = bins;
  a.confusion = ptr<int64_t>(confusion); a.class_loss = ptr<double>(class_loss);
  a.class_count = ptr<int64_t>(class_count); a.true_hist = ptr<int64_t>(true_hist);
  a.conf_hist = ptr<int64_t>(conf_hist); a.conf_correct = ptr<int64_t>(conf_correct);
  a.conf_sum = ptr<double>(conf_sum); a.margin_hist = ptr<int64_t>(margin_hist);
  a.prob_hist = ptr<int64_t>(prob_hist);
  a.nthreads = threads();
  check_sizes(2, bins);
  BCEResult r;
  run_kernel([&] { kernels().bce(a, r); }, 2, bins, stats ? "evaluate_binary" : "binary_cross_entropy");
  py::dict d;
  d["loss_sum"] = r.loss_sum; d["count"] = r.count; d["correct"] = r.correct;
  d["nonfinite"] = r.nonfinite; d["true_prob_sum"] = r.true_prob_sum;
  d["entropy_sum"] = r.entropy_sum; d["below_inv_e"] = r.below_inv_e;
  d["bad"] = r.bad; d["bad_value"] = r.bad_value; d["bad_index"] = r.bad_index;
  return d;
}

py::dict labels(py::object t, int tdt, int64_t E, int64_t C, int64_t ignore, py::object w) {
  LabelArgs a;
  a.t = cptr(t); a.tdt = tdt; a.E = E; a.C = C; a.ignore = ignore; a.w = cptr<double>(w);
  a.nthreads = threads();
  LabelResult r;
  {
    py::gil_scoped_release nogil;
    kernels().labels(a, r);
  }
  py::dict d;
  d["wsum"] = r.wsum; d["count"] = r.count; d["bad"] = r.bad; d["bad_value"] = r.bad_value;
  d["bad_index"] = r.bad_index;
  return d;
}

void surface(py::object X, py::object y, int64_t n, py::object w1, int64_t n1, py::object w2,
             int64_t n2, double bias, py::object loss, py::object acc) {
  SurfaceArgs a;
  a.X = cptr<double>(X); a.y = cptr<double>(y); a.n = n; a.w1 = cptr<double>(w1); a.n1 = n1;
  a.w2 = cptr<double>(w2); a.n2 = n2; a.bias = bias; a.loss = ptr<double>(loss);
  a.acc = ptr<double>(acc); a.nthreads = threads();
  bool failed = false;
  {
    py::gil_scoped_release nogil;
    try { kernels().surface(a); } catch (const AllocFailure&) { failed = true; }
  }
  if (failed) {
    PyErr_SetString(PyExc_MemoryError, ("X: could not allocate scratch memory for n=" +
                                        std::to_string(n) + " samples").c_str());
    throw py::error_already_set();
  }
}

}  // namespace

void register_core(py::module_& m) {
  m.def("ce", &ce);
  m.def("bce", &bce);
  m.def("labels", &labels);
  m.def("surface", &surface);
  m.def("mem_read", [](py::array a) {
    const void* p = a.data();
    const int64_t n = (int64_t)a.nbytes();
    const int nt = threads();
    py::gil_scoped_release nogil;
    return kernels().mem_read(p, n, nt);
  }, "Multi-threaded read of every byte of a contiguous array (benchmark reference).");
  m.def("mem_copy", [](py::array dst, py::array src) {
    if (dst.nbytes() != src.nbytes()) throw std::invalid_argument("mem_copy: sizes differ");
    void* d = dst.mutable_data();
    const void* s = src.data();
    const int64_t n = (int64_t)src.nbytes();
    const int nt = threads();
    py::gil_scoped_release nogil;
    kernels().mem_copy(d, s, n, nt);
  }, "Multi-threaded copy (read + write) of a contiguous array (benchmark reference).");
  m.def("set_num_threads", [](int64_t n) {
    if (n < 1 || n > kMaxThreads)
      throw std::invalid_argument("n: must be in [1, " + std::to_string(kMaxThreads) + "], got " +
                                  std::to_string(n));
    g_threads = (int)n;
  });
  m.attr("max_threads") = kMaxThreads;
  m.attr("max_bins") = kMaxBins;
  m.attr("max_classes") = kMaxClasses;
  m.def("_set_scratch_limit", [](int64_t b) { set_scratch_limit(b); },
        "Tests only: scratch allocations above this many bytes fail (0: no limit).");
  m.def("_set_wide_min_classes", [](int64_t c) { set_wide_min_classes(c); },
        "Tests only: C above which the multi-class kernel takes the wide-row path.");
  m.def("_wide_min_classes", [] { return wide_min_classes(); });
  m.def("get_num_threads", &threads);
  m.def("simd", [] { return std::string(kernels().name); });
  m.def("best_simd", [] { return std::string(best_isa()); });
  m.def("set_simd", [](const std::string& s) { return set_kernels(s.c_str()); });
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
}
