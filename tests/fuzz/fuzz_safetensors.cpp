// libFuzzer entry point for the safetensors parser. Not built by CMake. Build and run from the
// repository root:
//
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
//     -Isrc src/io/safetensors.cpp tests/fuzz/fuzz_safetensors.cpp -o /tmp/fuzz_safetensors
//   mkdir -p /tmp/st_corpus && /tmp/fuzz_safetensors /tmp/st_corpus tests/fuzz_corpus/safetensors \
//     -max_len=4096 -max_total_time=60
//
// (New inputs go to /tmp/st_corpus so the committed seeds stay small.) Contract: parse either
// throws kat::Error or returns a file whose tensors can all be read and re-serialized identically;
// any other exception aborts, which libFuzzer reports as a crash.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kat/core/error.h"
#include "kat/io/safetensors.h"

using namespace kat::io;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  SafetensorsFile f;
  try {
    f = SafetensorsFile::parse(std::vector<uint8_t>(data, data + size), "fuzz");
  } catch (const kat::Error&) {
    return 0;  // rejected: fine
  }
  // Accepted: every tensor must be readable, and a round trip must reproduce it.
  SafetensorsWriter w;
  for (const auto& [k, v] : f.metadata()) w.set_metadata(k, v);
  for (const auto& name : f.names()) {
    const TensorInfo& t = f.info(name);
    if (f.to_f32(name).size() != static_cast<size_t>(t.numel())) std::abort();
    if (dtype_is_integer(t.dtype)) (void)f.to_i64(name);
    w.add(name, t.dtype, t.shape, f.raw(name));
  }
  const SafetensorsFile g = SafetensorsFile::parse(w.serialize(), "roundtrip");
  if (g.names() != f.names() || g.metadata() != f.metadata()) std::abort();
  for (const auto& name : f.names()) {
    const TensorInfo &a = f.info(name), &b = g.info(name);
    if (a.dtype != b.dtype || a.shape != b.shape || std::memcmp(f.raw(name), g.raw(name), a.end - a.begin) != 0)
      std::abort();
  }
  return 0;
}
