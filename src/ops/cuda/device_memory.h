// Move-only owners of CUDA resources, each released in its destructor (so a constructor that
// throws half-way frees what it already holds):
//   DeviceBuffer<T>  n elements of device memory (cudaMalloc / cudaFree)
//   PinnedBuffer<T>  n elements of page-locked host memory (cudaMallocHost / cudaFreeHost)
//   CudaStream       a stream (cudaStreamCreateWithFlags / cudaStreamDestroy)
//   CudaEvent        an event (cudaEventCreateWithFlags / cudaEventDestroy)
// Allocation failures throw std::runtime_error through KAT_CUDA_CHECK; destructors never throw
// (a failing free during unwinding is ignored). Moves are noexcept and leave the source empty.
// Memory is uninitialised unless zero() / zero_async() is called.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

#include "ops/cuda/cuda_check.h"

namespace kat::cuda {

// Where an owned array lives: how to allocate and free it, and whether the host may touch it.
struct DeviceMemory {
  static cudaError_t allocate(void** p, std::size_t bytes) { return cudaMalloc(p, bytes); }
  static void free(void* p) noexcept { cudaFree(p); }
  static constexpr bool host_accessible = false;
};
struct PinnedMemory {
  static cudaError_t allocate(void** p, std::size_t bytes) { return cudaMallocHost(p, bytes); }
  static void free(void* p) noexcept { cudaFreeHost(p); }
  static constexpr bool host_accessible = true;
};

// n elements of T in Memory, owned: freed by the destructor, by release() and by allocate().
template <class T, class Memory>
class OwnedArray {
 public:
  OwnedArray() = default;
  explicit OwnedArray(std::size_t n) { allocate(n); }
  ~OwnedArray() { release(); }
  OwnedArray(const OwnedArray&) = delete;
  OwnedArray& operator=(const OwnedArray&) = delete;
  OwnedArray(OwnedArray&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  OwnedArray& operator=(OwnedArray&& o) noexcept {
    if (this != &o) {
      release();
      ptr_ = std::exchange(o.ptr_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }

  // Frees what is held, then allocates n elements (n = 0 holds nothing).
  void allocate(std::size_t n) {
    release();
    if (n == 0) return;
    void* p = nullptr;
    KAT_CUDA_CHECK(Memory::allocate(&p, n * sizeof(T)));
    ptr_ = static_cast<T*>(p);
    n_ = n;
  }
  void release() noexcept {
    if (ptr_) Memory::free(ptr_);
    ptr_ = nullptr;
    n_ = 0;
  }

  T* data() noexcept { return ptr_; }
  const T* data() const noexcept { return ptr_; }
  std::size_t size() const noexcept { return n_; }
  std::size_t bytes() const noexcept { return n_ * sizeof(T); }
  bool empty() const noexcept { return n_ == 0; }
  explicit operator bool() const noexcept { return ptr_ != nullptr; }

  // Device memory only: all bytes to zero (cudaMemset: ordered with the legacy stream), or on
  // `stream`. (Member functions of a class template are compiled only when called, so the
  // static_asserts reject a call on the wrong kind of memory and nothing else.)
  void zero() {
    static_assert(!Memory::host_accessible, "zero() is for device memory");
    if (ptr_) KAT_CUDA_CHECK(cudaMemset(ptr_, 0, bytes()));
  }
  void zero_async(cudaStream_t stream) {
    static_assert(!Memory::host_accessible, "zero_async() is for device memory");
    if (ptr_) KAT_CUDA_CHECK(cudaMemsetAsync(ptr_, 0, bytes(), stream));
  }

  // Pinned host memory only: element access from the host.
  T& operator[](std::size_t i) noexcept {
    static_assert(Memory::host_accessible, "the host cannot index device memory");
    return ptr_[i];
  }
  const T& operator[](std::size_t i) const noexcept {
    static_assert(Memory::host_accessible, "the host cannot index device memory");
    return ptr_[i];
  }
  T* begin() noexcept {
    static_assert(Memory::host_accessible, "the host cannot iterate device memory");
    return ptr_;
  }
  T* end() noexcept {
    static_assert(Memory::host_accessible, "the host cannot iterate device memory");
    return ptr_ + n_;
  }

 private:
  T* ptr_ = nullptr;
  std::size_t n_ = 0;
};

template <class T>
using DeviceBuffer = OwnedArray<T, DeviceMemory>;
template <class T>
using PinnedBuffer = OwnedArray<T, PinnedMemory>;

// A CUDA stream; default flags cudaStreamNonBlocking (no implicit sync with the legacy stream).
class CudaStream {
 public:
  CudaStream() = default;  // empty: get() is nullptr, i.e. the legacy default stream
  static CudaStream create(unsigned flags = cudaStreamNonBlocking) {
    CudaStream s;
    KAT_CUDA_CHECK(cudaStreamCreateWithFlags(&s.s_, flags));
    return s;
  }
  // A stream whose kernels the scheduler starts before those of lower-priority streams waiting
  // for the same SMs (the device's greatest priority: numerically the least).
  static CudaStream create_high_priority(unsigned flags = cudaStreamNonBlocking) {
    int least = 0, greatest = 0;
    KAT_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    CudaStream s;
    KAT_CUDA_CHECK(cudaStreamCreateWithPriority(&s.s_, flags, greatest));
    return s;
  }
  ~CudaStream() { release(); }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  CudaStream(CudaStream&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  CudaStream& operator=(CudaStream&& o) noexcept {
    if (this != &o) {
      release();
      s_ = std::exchange(o.s_, nullptr);
    }
    return *this;
  }
  void release() noexcept {
    if (s_) cudaStreamDestroy(s_);
    s_ = nullptr;
  }
  void synchronize() const { KAT_CUDA_CHECK(cudaStreamSynchronize(s_)); }
  cudaStream_t get() const noexcept { return s_; }
  operator cudaStream_t() const noexcept { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

// A CUDA event; default flags cudaEventDefault (timing enabled). Pass cudaEventDisableTiming for
// events used only to order streams.
class CudaEvent {
 public:
  CudaEvent() = default;  // empty
  static CudaEvent create(unsigned flags = cudaEventDefault) {
    CudaEvent e;
    KAT_CUDA_CHECK(cudaEventCreateWithFlags(&e.e_, flags));
    return e;
  }
  ~CudaEvent() { release(); }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  CudaEvent(CudaEvent&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
  CudaEvent& operator=(CudaEvent&& o) noexcept {
    if (this != &o) {
      release();
      e_ = std::exchange(o.e_, nullptr);
    }
    return *this;
  }
  void release() noexcept {
    if (e_) cudaEventDestroy(e_);
    e_ = nullptr;
  }
  void record(cudaStream_t stream) { KAT_CUDA_CHECK(cudaEventRecord(e_, stream)); }
  void synchronize() const { KAT_CUDA_CHECK(cudaEventSynchronize(e_)); }
  // Milliseconds from `start` to this event (both recorded and completed, timing enabled).
  float elapsed_ms_since(const CudaEvent& start) const {
    float ms = 0.f;
    KAT_CUDA_CHECK(cudaEventElapsedTime(&ms, start.e_, e_));
    return ms;
  }
  cudaEvent_t get() const noexcept { return e_; }
  operator cudaEvent_t() const noexcept { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

}  // namespace kat::cuda
