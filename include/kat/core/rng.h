// Deterministic, serializable random numbers. Every random decision in the engine (init, data order,
// augmentation, drop-path, mixup) draws from an Rng whose state is a pair of uint64 so it can be
// stored in a checkpoint and restored bit-exactly.
#pragma once
#include <cmath>
#include <cstdint>

namespace kat {

// splitmix64 seeding + xoshiro-style 128-bit state (xorshift128+). Small, fast, fully reproducible.
class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { reseed(seed); }
  void reseed(uint64_t seed) {
    uint64_t z = seed;
    s0_ = splitmix(z);
    s1_ = splitmix(z);
    if (s0_ == 0 && s1_ == 0) s1_ = 1;
  }
  uint64_t next_u64() {
    uint64_t x = s0_;
    const uint64_t y = s1_;
    s0_ = y;
    x ^= x << 23;
    s1_ = x ^ y ^ (x >> 17) ^ (y >> 26);
    return s1_ + y;
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [0, n).
  uint64_t below(uint64_t n) { return n == 0 ? 0 : next_u64() % n; }
  // Standard normal (Box-Muller, no cached second value so the state stays two words).
  double normal() {
    double u1 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  // Normal(0, std) truncated to [-2 std, 2 std] (timm's trunc_normal_ with a=-2std, b=2std).
  double trunc_normal(double std) {
    for (;;) {
      const double z = normal();
      if (z >= -2.0 && z <= 2.0) return z * std;
    }
  }
  // Beta(a, a) via two gammas (for mixup's lambda).
  double beta(double a, double b) {
    const double x = gamma(a), y = gamma(b);
    return x / (x + y);
  }
  double gamma(double a) {  // Marsaglia-Tsang
    if (a < 1.0) return gamma(a + 1.0) * std::pow(uniform() + 1e-300, 1.0 / a);
    const double d = a - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
    for (;;) {
      double x, v;
      do {
        x = normal();
        v = 1.0 + c * x;
      } while (v <= 0.0);
      v = v * v * v;
      const double u = uniform();
      if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
      if (std::log(u + 1e-300) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
    }
  }
  uint64_t state0() const { return s0_; }
  uint64_t state1() const { return s1_; }
  void set_state(uint64_t a, uint64_t b) {
    s0_ = a;
    s1_ = b;
  }

 private:
  static uint64_t splitmix(uint64_t& z) {
    z += 0x9E3779B97F4A7C15ull;
    uint64_t r = z;
    r = (r ^ (r >> 30)) * 0xBF58476D1CE4E5B9ull;
    r = (r ^ (r >> 27)) * 0x94D049BB133111EBull;
    return r ^ (r >> 31);
  }
  uint64_t s0_ = 1, s1_ = 2;
};

}  // namespace kat
