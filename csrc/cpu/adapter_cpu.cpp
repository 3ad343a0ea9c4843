// CPU registration of svdlora::adapter_forward / adapter_backward (common/adapter_impl.h).
#include <torch/library.h>

#include "common/adapter_impl.h"

namespace svdlora::cpu {

TORCH_LIBRARY_IMPL(svdlora, CPU, m) {
  m.impl("adapter_forward", &adapter::forward);
  m.impl("adapter_backward", &adapter::backward);
}

}  // namespace svdlora::cpu
