// Small helpers shared by the test files.
#pragma once
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <string>

#include "kat/core/error.h"
#include "kat/core/rng.h"
#include "kat/data/dataset.h"

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

// An in-memory dataset of n random h x w x c images with random labels in [0, classes), class names
// "0".."classes-1", all drawn from Rng(seed).
inline data::Dataset synthetic(int n, int h, int w, int c, int classes, uint64_t seed) {
  data::Dataset ds;
  ds.height = h;
  ds.width = w;
  ds.channels = c;
  ds.num_classes = classes;
  ds.source = "synthetic";
  Rng rng(seed);
  ds.pixels.resize(static_cast<size_t>(n) * h * w * c);
  for (auto& p : ds.pixels) p = uint8_t(rng.below(256));
  ds.labels.resize(n);
  for (auto& l : ds.labels) l = int32_t(rng.below(classes));
  for (int k = 0; k < classes; ++k) ds.class_names.push_back(std::to_string(k));
  return ds;
}

}  // namespace kat::test
