#include "train/progress.h"

#include <unistd.h>

#include <cstdio>

namespace kat {

std::string format_duration(double s) {
  if (!(s >= 0) || s > 1e7) return "--:--";
  const long t = long(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%ld:%02ld", t / 60, t % 60);
  return buf;
}

Progress::Progress(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled), tty_(isatty(STDERR_FILENO)) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

double Progress::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(int64_t done, const std::string& info, double items_per_unit) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (tty_) {
    if (std::chrono::duration<double>(now - last_draw_).count() < 0.12 && done < total_) return;
    last_draw_ = now;
    draw(done, info, items_per_unit);
  } else {
    const int decile = total_ > 0 ? int(10 * done / total_) : 10;
    if (decile == last_decile_) return;
    last_decile_ = decile;
    draw(done, info, items_per_unit);
  }
}

void Progress::finish() {
  if (!enabled_) return;
  if (tty_) std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
}

void Progress::draw(int64_t done, const std::string& info, double items_per_unit) {
  const double el = elapsed();
  const double rate = el > 0 ? done / el : 0;
  const double eta = rate > 0 ? (total_ - done) / rate : -1;
  constexpr int W = 24;
  const int fill = total_ > 0 ? int(W * done / total_) : W;
  std::string bar(fill, '#');
  bar += std::string(W - fill, '.');
  char line[512];
  std::snprintf(line, sizeof line, "%s [%s] %lld/%lld %s | %.0f img/s | %s elapsed, ETA %s", label_.c_str(),
                bar.c_str(), (long long)done, (long long)total_, info.c_str(), rate * items_per_unit,
                format_duration(el).c_str(), format_duration(eta).c_str());
  if (tty_)
    std::fprintf(stderr, "\r\033[K%s", line);
  else
    std::fprintf(stderr, "%s\n", line);
  std::fflush(stderr);
}

}  // namespace kat
