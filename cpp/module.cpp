// The extension module only registers its parts; each part lives in its own file.
#include <pybind11/pybind11.h>

namespace py = pybind11;
void register_core(py::module_& m);

PYBIND11_MODULE(_core, m) {
  m.doc() = "lossdiag compiled CPU kernels (use the lossdiag package, not this module)";
  register_core(m);
}
