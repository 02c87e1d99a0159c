// A progress bar for long loops: "label [#####.....] 234/468 loss 0.51 | 1234 img/s | ETA 0:45".
// On a terminal it redraws in place (at most ~8 times a second); otherwise (logs, CI) it prints a
// plain line at every 10% so logs stay readable.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace kat {

class Progress {
 public:
  Progress(std::string label, int64_t total, bool enabled = true);
  // done: items finished so far; info: free text (e.g. "loss 0.51 lr 1e-3"); items_per_unit: for the
  // throughput figure (images per step).
  void update(int64_t done, const std::string& info, double items_per_unit = 1.0);
  void finish();  // clears the redrawn line on a terminal
  double elapsed() const;

 private:
  void draw(int64_t done, const std::string& info, double items_per_unit);
  std::string label_;
  int64_t total_;
  bool enabled_, tty_;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

std::string format_duration(double seconds);

}  // namespace kat
