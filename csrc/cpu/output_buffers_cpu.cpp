// The CPU block-recycling cache behind svdlora::empty_output (common/output_buffers.h).
//
// A freed block goes back to the cache (newest last) and the oldest blocks are released once
// the cache holds more than its limit.  A request takes the smallest cached block that fits
// without wasting more than a quarter of it, so a training loop that allocates the same
// shapes every step stops paying page faults after its first step.
#include "common/output_buffers.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>
#include <c10/util/accumulate.h>

#ifndef _WIN32
#include <pthread.h>
#endif

#include <atomic>
#include <mutex>
#include <utility>
#include <vector>

namespace svdlora {
namespace {

class BufferCache {
 public:
  explicit BufferCache(int64_t limit_bytes = int64_t{1} << 30) : limit_bytes_(limit_bytes) {}

  struct Taken {
    void* ptr = nullptr;     // a cached block that fits, or nullptr
    int64_t capacity = 0;    // its size
    bool recycling = false;  // false when the limit is 0: allocate as torch would
  };

  // The smallest cached block of at least nbytes that wastes at most a quarter of itself.
  Taken take(int64_t nbytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (limit_bytes_ == 0) return {};
    size_t best = blocks_.size();
    for (size_t i = 0; i < blocks_.size(); ++i) {
      const int64_t cap = blocks_[i].second;
      if (cap >= nbytes && cap <= nbytes + nbytes / 4 &&
          (best == blocks_.size() || cap < blocks_[best].second)) {
        best = i;
      }
    }
    if (best == blocks_.size()) {
      ++misses_;
      return {nullptr, 0, true};
    }
    const auto [ptr, capacity] = blocks_[best];
    blocks_.erase(blocks_.begin() + static_cast<std::ptrdiff_t>(best));
    cached_bytes_ -= capacity;
    ++hits_;
    return {ptr, capacity, true};
  }

  // Runs inside a storage deleter, so it must not throw: a block it cannot keep is freed.
  void give_back(void* ptr, int64_t capacity) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    if (capacity <= limit_bytes_) {
      try {
        blocks_.emplace_back(ptr, capacity);
        cached_bytes_ += capacity;
        evict_locked(limit_bytes_);
        return;
      } catch (...) {  // out of memory growing the list: fall through and free the block
      }
    }
    c10::free_cpu(ptr);
  }

  void set_limit(int64_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    limit_bytes_ = bytes;
    evict_locked(bytes);
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    evict_locked(0);
  }

  // Read without the lock: only in a freshly forked child, which has a single thread.
  int64_t limit_after_fork() const { return limit_bytes_; }

  BufferCacheStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {cached_bytes_, static_cast<int64_t>(blocks_.size()), limit_bytes_, hits_, misses_};
  }

 private:
  // Frees the oldest blocks until at most `limit` bytes are cached.  It frees under the lock
  // and allocates nothing, so it cannot fail half-way.
  void evict_locked(int64_t limit) noexcept {
    size_t drop = 0;
    while (cached_bytes_ > limit && drop < blocks_.size()) {
      cached_bytes_ -= blocks_[drop].second;
      c10::free_cpu(blocks_[drop].first);
      ++drop;
    }
    blocks_.erase(blocks_.begin(), blocks_.begin() + static_cast<std::ptrdiff_t>(drop));
  }

  std::mutex mutex_;
  std::vector<std::pair<void*, int64_t>> blocks_;  // oldest first
  int64_t cached_bytes_ = 0;
  int64_t limit_bytes_;
  int64_t hits_ = 0, misses_ = 0;
};

// Never destroyed: a tensor may be freed (and call give_back) during static destruction.
// A forked child gets a fresh cache: the parent's mutex may have been held by another thread
// at the fork, and would then never be released in the child.  The child's copy of the old
// cache (and of its blocks, copy-on-write) is simply left alone.
std::atomic<BufferCache*> current_cache{nullptr};

BufferCache& cache() {
  static const bool created = [] {
    current_cache = new BufferCache();
#ifndef _WIN32
    pthread_atfork(nullptr, nullptr, [] {
      const int64_t limit = current_cache.load()->limit_after_fork();
      current_cache = new BufferCache(limit);
    });
#endif
    return true;
  }();
  (void)created;
  return *current_cache.load();
}

}  // namespace

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  if (!options.device().is_cpu()) return at::empty(sizes, options);
  const int64_t nbytes = c10::multiply_integers(sizes) *
                         static_cast<int64_t>(c10::elementSize(options.dtype().toScalarType()));
  if (nbytes < kRecycleMinBytes) return at::empty(sizes, options);
  auto taken = cache().take(nbytes);
  if (!taken.recycling) return at::empty(sizes, options);
  if (taken.ptr == nullptr) {
    taken.ptr = c10::alloc_cpu(static_cast<size_t>(nbytes));  // throws c10::Error when out of memory
    taken.capacity = nbytes;
  }
  const int64_t capacity = taken.capacity;
  return at::from_blob(
      taken.ptr, sizes, [capacity](void* p) { cache().give_back(p, capacity); }, options);
}

BufferCacheStats buffer_cache_stats() { return cache().stats(); }

void set_buffer_cache_limit(int64_t bytes) {
  TORCH_CHECK(bytes >= 0, "svdlora buffer cache: limit must be >= 0 bytes, got ", bytes);
  cache().set_limit(bytes);
}

void empty_buffer_cache() { cache().clear(); }

}  // namespace svdlora
