// Error handling tiers (see README "Errors"):
//  - kat::Error: bad user input (files, shapes, flags). Carries a message that names the thing at
//    fault; the CLI turns it into "error: ..." and a non-zero exit code.
//  - KAT_ASSERT: internal invariants; a failure is a bug in the engine, not in the input.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace kat {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace kat

// KAT_CHECK(cond, parts...): throw kat::Error built from the streamed parts when cond is false.
#define KAT_CHECK(cond, ...)                                             \
  do {                                                                   \
    if (!(cond)) throw ::kat::Error(::kat::detail::concat(__VA_ARGS__)); \
  } while (0)

#define KAT_ASSERT(cond)                                                                                         \
  do {                                                                                                           \
    if (!(cond))                                                                                                 \
      throw ::kat::Error(                                                                                        \
          ::kat::detail::concat("internal error: assertion '", #cond, "' failed at ", __FILE__, ":", __LINE__)); \
  } while (0)
