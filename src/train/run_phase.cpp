#include "train/run_phase.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <ctime>

namespace kat {

namespace {
std::atomic<const char*> g_phase{"starting"};
std::atomic<int64_t> g_step{0};
std::atomic<int64_t> g_since_ns{0};  // CLOCK_MONOTONIC when the phase began
static_assert(std::atomic<const char*>::is_always_lock_free && std::atomic<int64_t>::is_always_lock_free,
              "the SIGUSR1 report reads these from a signal handler");

int64_t monotonic_ns() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);  // async-signal-safe
  return int64_t(t.tv_sec) * 1000000000 + t.tv_nsec;
}

// Appends s (or the decimal v) at buf[pos..n-1), keeping room for the NUL; returns the new pos.
int put(char* buf, int n, int pos, const char* s) {
  while (*s && pos < n - 1) buf[pos++] = *s++;
  return pos;
}
int put(char* buf, int n, int pos, int64_t v) {
  char digits[24];
  int k = 0;
  const bool neg = v < 0;
  uint64_t u = neg ? uint64_t(-(v + 1)) + 1 : uint64_t(v);
  do {
    digits[k++] = char('0' + u % 10);
    u /= 10;
  } while (u && k < 23);
  if (neg && pos < n - 1) buf[pos++] = '-';
  while (k > 0 && pos < n - 1) buf[pos++] = digits[--k];
  return pos;
}

void on_sigusr1(int) {
  char line[256];
  const int len = format_run_phase(line, sizeof line);
  ssize_t r = ::write(STDERR_FILENO, line, size_t(len));
  (void)r;
}
}  // namespace

void set_run_phase(const char* what, int64_t step) {
  g_step.store(step);
  g_since_ns.store(monotonic_ns());
  g_phase.store(what);
}
const char* run_phase() { return g_phase.load(); }
int64_t run_phase_step() { return g_step.load(); }

int format_run_phase(char* buf, int n) {
  const int64_t ms = (monotonic_ns() - g_since_ns.load()) / 1000000;
  const int64_t step = g_step.load();
  int p = put(buf, n, 0, "kat: SIGUSR1");
  if (step >= 0) {
    p = put(buf, n, p, " at step ");
    p = put(buf, n, p, step);
  }
  p = put(buf, n, p, ": ");
  p = put(buf, n, p, g_phase.load());
  p = put(buf, n, p, " for ");
  p = put(buf, n, p, ms / 1000);
  p = put(buf, n, p, ".");
  p = put(buf, n, p, (ms % 1000) / 100);
  p = put(buf, n, p, " s\n");
  buf[p] = '\0';
  return p;
}

void install_run_phase_report() {
  struct sigaction sa {};
  sa.sa_handler = on_sigusr1;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // the run goes on: interrupted system calls resume
  sigaction(SIGUSR1, &sa, nullptr);
}

}  // namespace kat
