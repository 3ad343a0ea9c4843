// pybind11 entry point of svdlora._C.  Only plain build facts cross pybind11; tensors go
// through the torch custom ops registered in schemas.cpp and the per-device kernel files.
#include <pybind11/pybind11.h>

#ifdef SVDLORA_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "svdlora compiled core (torch custom ops are registered on import)";
  m.def("build_info", [] {
    py::dict info;
    info["compiled"] = true;
    info["built_with_torch"] = SVDLORA_TORCH_VERSION;
    info["cuda"] = static_cast<bool>(SVDLORA_CUDA_ENABLED);
#ifdef SVDLORA_WITH_CUDA
    info["cuda_version"] = std::to_string(CUDART_VERSION / 1000) + "." +
                           std::to_string((CUDART_VERSION % 1000) / 10);
#else
    info["cuda_version"] = py::none();
#endif
    return info;
  });
}
