// pybind11 entry point of svdlora._C.  Only plain build facts and the CPU output-buffer cache
// controls cross pybind11; tensors go through the torch custom ops registered in schemas.cpp
// and the per-device kernel files.
#include <pybind11/pybind11.h>

#include "common/adapter_impl.h"
#include "common/output_buffers.h"

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
  m.def("buffer_cache_stats", [] {
    const auto s = svdlora::buffer_cache_stats();
    py::dict d;
    d["cached_bytes"] = s.cached_bytes;
    d["cached_blocks"] = s.cached_blocks;
    d["limit_bytes"] = s.limit_bytes;
    d["min_block_bytes"] = svdlora::kRecycleMinBytes;
    d["hits"] = s.hits;
    d["misses"] = s.misses;
    return d;
  });
  m.def("set_buffer_cache_limit", &svdlora::set_buffer_cache_limit, py::arg("nbytes"));
  m.def("empty_buffer_cache", &svdlora::empty_buffer_cache);
  // For tests: which way the adapter ops apply their core for these sizes.
  m.def("_adapter_core_is_structured", &svdlora::adapter::use_structured_core, py::arg("tokens"),
        py::arg("rank"), py::arg("inner_rank"));
}
