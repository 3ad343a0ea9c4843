// Allocation of the large outputs of svdlora ops (adapter y and dx).  On the CPU, blocks of at
// least kRecycleMinBytes are recycled by a small bounded cache instead of going back to the
// operating system; every other request is a plain at::empty (CUDA has its own caching
// allocator).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace svdlora {

// Big blocks freed to glibc go back to the kernel -- anything over its mmap threshold (up to
// 32 MiB) at once, and a large free region at the top of its heap by trimming -- and come
// back as zero-filled page faults on the next allocation: on a 2-core machine that costs a
// third to a half of a skinny GEMM's time, every training step and layer.  Outputs this size
// and up are worth recycling; smaller ones stay with the system allocator.
constexpr int64_t kRecycleMinBytes = int64_t{4} << 20;

// An uninitialised tensor of the given sizes (contiguous).
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options);

struct BufferCacheStats {
  int64_t cached_bytes;   // held by the cache, free for reuse
  int64_t cached_blocks;
  int64_t limit_bytes;    // the cache never holds more than this (0 disables recycling)
  int64_t hits;           // allocations served from the cache since start
  int64_t misses;         // allocations >= kRecycleMinBytes that had to go to the system
};

BufferCacheStats buffer_cache_stats();
void set_buffer_cache_limit(int64_t bytes);  // evicts down to the new limit at once
void empty_buffer_cache();

}  // namespace svdlora
