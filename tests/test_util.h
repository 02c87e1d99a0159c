// Small helpers shared by the test files.
#pragma once
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <initializer_list>
#include <string>

#include "kat/core/error.h"

namespace kat::test {

// Expect a kat::Error whose message contains all the given fragments.
template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "expected kat::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "message '" << msg << "' lacks '" << p << "'";
  }
}

// A path in the temp directory unique to this process, so that two test runs on one machine (a
// CI checkout beside a working tree) never share a run directory.
inline std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / (name + "." + std::to_string(getpid()))).string();
}

}  // namespace kat::test
