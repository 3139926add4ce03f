// lossdiag._cuda: a thin pybind11 layer over the CUDA launchers (kernels.cu). All validation,
// defaults, allocation and result objects live in Python (lossdiag/_gpu.py); this module gets raw
// device pointers, dtype codes and a stream, enqueues kernels and returns without synchronising.
// cudart is linked statically and no CUDA call happens at import, so importing this module works
// on machines without a driver or a GPU; device_info() then raises RuntimeError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#ifdef LDCUDA_EMU
#include "emu/cuda_emu.h"
#else
#include <cuda_runtime_api.h>
#endif

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_api.h"

namespace py = pybind11;
using namespace ldcuda;

namespace {

bool has(const py::dict& d, const char* k) { return d.contains(k) && !d[k].is_none(); }
template <class T> T get(const py::dict& d, const char* k, T def) {
  return has(d, k) ? d[k].cast<T>() : def;
}
template <class T = void> T* ptr(const py::dict& d, const char* k) {
  return has(d, k) ? reinterpret_cast<T*>(d[k].cast<uintptr_t>()) : nullptr;
}

// Workspace callback: `alloc(nbytes)` is a Python callable returning a device pointer (int) whose
// memory it keeps alive until the launch has been enqueued (stream-ordered pools make that safe).
struct AllocCtx { py::object fn; };
void* alloc_cb(void* ctx, int64_t nbytes) {
  auto* c = static_cast<AllocCtx*>(ctx);
  return reinterpret_cast<void*>(c->fn(nbytes).cast<uintptr_t>());
}

void throw_cuda(cudaError_t e, const char* what) {
  (void)cudaGetLastError();
  throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(e) + " (" +
                           cudaGetErrorString(e) + ")");
}

py::dict device_info() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) throw_cuda(e, "no usable CUDA device");
  if (n < 1) throw std::runtime_error("no CUDA device");
  int dev = 0;
  e = cudaGetDevice(&dev);
  if (e != cudaSuccess) throw_cuda(e, "cudaGetDevice");
  cudaDeviceProp p;
  e = cudaGetDeviceProperties(&p, dev);
  if (e != cudaSuccess) throw_cuda(e, "cudaGetDeviceProperties");
  int rt = 0, drv = 0;
  cudaRuntimeGetVersion(&rt);
  cudaDriverGetVersion(&drv);
  py::dict d;
  d["name"] = std::string(p.name);
  d["device"] = dev;
  d["device_count"] = n;
  d["compute_capability"] = std::to_string(p.major) + "." + std::to_string(p.minor);
  d["multiprocessors"] = p.multiProcessorCount;
  d["memory_gib"] = (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0);
  d["runtime_version"] = rt;
  d["driver_version"] = drv;
  return d;
}

// ---- DLPack (read-only peek: the capsule is not consumed, its destructor frees it) ----------
struct DLDevice { int32_t device_type; int32_t device_id; };
struct DLDataType { uint8_t code; uint8_t bits; uint16_t lanes; };
struct DLTensor {
  void* data; DLDevice device; int32_t ndim; DLDataType dtype;
  int64_t* shape; int64_t* strides; uint64_t byte_offset;
};
struct DLManagedTensor { DLTensor dl_tensor; void* manager_ctx; void (*deleter)(DLManagedTensor*); };
struct DLPackVersion { uint32_t major; uint32_t minor; };
struct DLManagedTensorVersioned {
  DLPackVersion version; void* manager_ctx; void (*deleter)(DLManagedTensorVersioned*);
  uint64_t flags; DLTensor dl_tensor;
};

py::dict dlpack_info(py::object capsule) {
  PyObject* o = capsule.ptr();
  if (!PyCapsule_CheckExact(o)) throw std::invalid_argument("expected a DLPack capsule");
  const char* name = PyCapsule_GetName(o);
  if (!name) throw py::error_already_set();
  const DLTensor* t = nullptr;
  const std::string nm(name);
  if (nm == "dltensor") {
    auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(o, name));
    if (!m) throw py::error_already_set();
    t = &m->dl_tensor;
  } else if (nm == "dltensor_versioned") {
    auto* m = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(o, name));
    if (!m) throw py::error_already_set();
    if (m->version.major != 1) throw std::invalid_argument("unsupported DLPack major version");
    t = &m->dl_tensor;
  } else {
    throw std::invalid_argument("not an unused DLPack capsule (name '" + nm + "')");
  }
  py::list shape, strides;
  for (int k = 0; k < t->ndim; ++k) {
    shape.append(t->shape[k]);
    if (t->strides) strides.append(t->strides[k]);
  }
  py::dict d;
  d["ptr"] = reinterpret_cast<uintptr_t>(t->data) + (uintptr_t)t->byte_offset;
  d["shape"] = py::tuple(shape);
  d["strides"] = t->strides ? py::object(py::tuple(strides)) : py::object(py::none());
  d["code"] = (int)t->dtype.code;
  d["bits"] = (int)t->dtype.bits;
  d["lanes"] = (int)t->dtype.lanes;
  d["device_type"] = (int)t->device.device_type;
  d["device_id"] = (int)t->device.device_id;
  return d;
}

py::dict layout_dict(int64_t C, int64_t bins) {
  const Layout L = layout(C, bins);
  py::dict d;
  d["f_class_loss"] = L.f_class_loss; d["f_conf_sum"] = L.f_conf_sum; d["f_size"] = L.f_size;
  d["i_confusion"] = L.i_confusion; d["i_class_count"] = L.i_class_count;
  d["i_true_hist"] = L.i_true_hist; d["i_conf_hist"] = L.i_conf_hist;
  d["i_conf_correct"] = L.i_conf_correct; d["i_margin_hist"] = L.i_margin_hist;
  d["i_prob_hist"] = L.i_prob_hist; d["i_conf_fix"] = L.i_conf_fix; d["i_size"] = L.i_size;
  return d;
}

void ce(const py::dict& d, py::object alloc) {
  CEArgs a;
  a.device = get<int>(d, "device", 0);
  a.stream = get<uintptr_t>(d, "stream", 0);
  a.x = ptr(d, "x"); a.xdt = get<int>(d, "xdt", X_F32);
  a.t = ptr(d, "t"); a.tdt = get<int>(d, "tdt", L_I64); a.soft = get<bool>(d, "soft", false);
  a.N = get<int64_t>(d, "N", 0); a.C = get<int64_t>(d, "C", 1);
  a.inner = get<int64_t>(d, "inner", 1); a.E = get<int64_t>(d, "E", 0);
  a.S = get<int64_t>(d, "S", 1); a.rows = get<bool>(d, "rows", false);
  a.w = ptr<const double>(d, "w"); a.ignore = get<int64_t>(d, "ignore", -100);
  a.eps = get<double>(d, "eps", 0.0); a.probs = get<bool>(d, "probs", false);
  a.loss = get<bool>(d, "loss", true); a.grad = get<bool>(d, "grad", false);
  a.stats = get<bool>(d, "stats", false); a.reduction = get<int>(d, "reduction", RED_MEAN);
  const std::vector<int64_t> ks = get<std::vector<int64_t>>(d, "ks", {});
  if (ks.size() > 8) throw std::invalid_argument("top_k: at most 8 values");
  a.nk = (int)ks.size();
  for (size_t k = 0; k < ks.size(); ++k) a.ks[k] = ks[k];
  a.g = ptr(d, "g"); a.loss_out = ptr(d, "loss_out"); a.bins = get<int>(d, "bins", 0);
  a.f = ptr<double>(d, "f"); a.i = ptr<int64_t>(d, "i");
  a.per_sample = get<bool>(d, "per_sample", false);
  a.s_loss = ptr<double>(d, "s_loss"); a.s_count = ptr<int64_t>(d, "s_count");
  a.s_correct = ptr<int64_t>(d, "s_correct"); a.s_inter = ptr<int64_t>(d, "s_inter");
  a.s_true = ptr<int64_t>(d, "s_true"); a.s_pred = ptr<int64_t>(d, "s_pred");
  a.elem_loss = ptr<double>(d, "elem_loss");
  if (!a.f || !a.i) throw std::invalid_argument("result slabs f and i are required");
  AllocCtx ctx{alloc};
  Workspace ws; ws.alloc = alloc_cb; ws.ctx = &ctx;
  launch_ce(a, ws);
}

void bce(const py::dict& d, py::object alloc) {
  BCEArgs a;
  a.device = get<int>(d, "device", 0);
  a.stream = get<uintptr_t>(d, "stream", 0);
  a.x = ptr(d, "x"); a.xdt = get<int>(d, "xdt", X_F32);
  a.t = ptr(d, "t"); a.tdt = get<int>(d, "tdt", X_F32); a.tfloat = get<bool>(d, "tfloat", true);
  a.E = get<int64_t>(d, "E", 0);
  a.pw = ptr<const double>(d, "pw"); a.pw_len = get<int64_t>(d, "pw_len", 0);
  a.pw_inner = get<int64_t>(d, "pw_inner", 1);
  a.probs = get<bool>(d, "probs", false); a.grad = get<bool>(d, "grad", false);
  a.stats = get<bool>(d, "stats", false); a.reduction = get<int>(d, "reduction", RED_MEAN);
  a.threshold = get<double>(d, "threshold", 0.0);
  a.g = ptr(d, "g"); a.loss_out = ptr(d, "loss_out"); a.bins = get<int>(d, "bins", 0);
  a.f = ptr<double>(d, "f"); a.i = ptr<int64_t>(d, "i");
  if (!a.f || !a.i) throw std::invalid_argument("result slabs f and i are required");
  AllocCtx ctx{alloc};
  Workspace ws; ws.alloc = alloc_cb; ws.ctx = &ctx;
  launch_bce(a, ws);
}

}  // namespace

#ifndef LOSSDIAG_CUDA_ARCHS
#define LOSSDIAG_CUDA_ARCHS ""
#endif

#ifndef LDCUDA_MODULE
#define LDCUDA_MODULE _cuda
#endif

PYBIND11_MODULE(LDCUDA_MODULE, m) {
  m.doc() = "lossdiag compiled CUDA kernels (use the lossdiag package, not this module)";
  m.def("device_info", &device_info,
        "Name, compute capability, memory and versions of the current device; raises "
        "RuntimeError without a usable driver/device.");
  m.def("dlpack_info", &dlpack_info, "Pointer, shape, strides, dtype and device of a DLPack "
        "capsule (read only: the capsule is not consumed).");
  m.def("layout", &layout_dict, "Offsets of the result slabs for C classes and `bins` bins.");
  m.def("ce", &ce, "Enqueue the multi-class kernels (arguments as a dict).");
  m.def("bce", &bce, "Enqueue the binary kernels (arguments as a dict).");
  m.def("mem_read", [](int device, uintptr_t stream, uintptr_t p, int64_t nbytes, uintptr_t out) {
    launch_mem_read(device, stream, reinterpret_cast<const void*>(p), nbytes,
                    reinterpret_cast<uint64_t*>(out));
  }, "Read every byte of a device buffer once (benchmark reference; out: 8 zeroed bytes).");
  m.attr("F_SLOTS") = py::dict(
      py::arg("loss") = (int)F_LOSS, py::arg("nll_sum") = (int)F_NLL,
      py::arg("smooth_sum") = (int)F_SMOOTH, py::arg("weight_sum") = (int)F_WSUM,
      py::arg("true_prob_sum") = (int)F_TPS, py::arg("entropy_sum") = (int)F_ENT,
      py::arg("loss_sum") = (int)F_LOSS_SUM, py::arg("mean") = (int)F_MEAN,
      py::arg("accuracy") = (int)F_ACC);
  m.attr("I_SLOTS") = py::dict(
      py::arg("count") = (int)I_COUNT, py::arg("ignored") = (int)I_IGNORED,
      py::arg("nonfinite") = (int)I_NONFINITE, py::arg("nonfinite_rows") = (int)I_NFROWS,
      py::arg("below_inv_e") = (int)I_BELOW, py::arg("elements") = (int)I_ELEMENTS,
      py::arg("correct") = (int)I_CORRECT, py::arg("err") = (int)I_ERR,
      py::arg("err_value") = (int)I_ERR_VAL, py::arg("errw") = (int)I_ERRW,
      py::arg("errw_value") = (int)I_ERRW_VAL);
  m.attr("built_architectures") = std::string(LOSSDIAG_CUDA_ARCHS);
}
