// One persistent host thread per GPU replica (src/train/gpu_group.*). Data-parallel training in
// one process must not drive the replicas one after another from a single thread: enqueueing a
// kat_tiny step costs milliseconds of host time (kernel launches, the parallel copy of a 224^2
// batch into pinned memory), so with two GPUs the second one starts late and the host, not the
// GPUs, sets the pace (measured on 2x H200: 78 % scaling before, see bench/records/NOTES.md).
//
// run(f) calls f(r) for every replica r at once, on worker r (replica 0 on the calling thread),
// and returns when all are done; the first exception is rethrown on the calling thread after all
// have finished (no replica is left mid-call). Workers are idle between calls (condition variable).
#pragma once
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kat {

class ReplicaPool {
 public:
  explicit ReplicaPool(int n) : n_(n), errors_(size_t(n)) {
    for (int r = 1; r < n; ++r) workers_.emplace_back([this, r] { work(r); });
  }
  ~ReplicaPool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  ReplicaPool(const ReplicaPool&) = delete;
  ReplicaPool& operator=(const ReplicaPool&) = delete;

  int size() const { return n_; }

  void run(const std::function<void(int)>& f) {
    if (n_ == 1) {  // one replica: no thread hop
      f(0);
      return;
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = &f;
      pending_ = n_ - 1;
      ++generation_;
    }
    cv_.notify_all();
    call(0, f);
    {
      std::unique_lock<std::mutex> lk(mu_);
      done_cv_.wait(lk, [&] { return pending_ == 0; });
      job_ = nullptr;
    }
    for (auto& e : errors_)
      if (e) {
        std::exception_ptr first = e;
        for (auto& x : errors_) x = nullptr;
        std::rethrow_exception(first);
      }
  }

 private:
  void call(int r, const std::function<void(int)>& f) {
    try {
      f(r);
    } catch (...) {
      errors_[size_t(r)] = std::current_exception();
    }
  }
  void work(int r) {
    unsigned long long seen = 0;
    for (;;) {
      const std::function<void(int)>* f = nullptr;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        f = job_;
      }
      call(r, *f);
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (--pending_ == 0) done_cv_.notify_one();
      }
    }
  }

  int n_;
  std::vector<std::thread> workers_;
  std::vector<std::exception_ptr> errors_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)>* job_ = nullptr;
  unsigned long long generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

}  // namespace kat
