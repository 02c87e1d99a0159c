// safetensors reading and writing (https://github.com/huggingface/safetensors).
//
// Layout: u64 little-endian header length N, N bytes of UTF-8 JSON
//   {"__metadata__": {str: str}, "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}}
// then the data section; offsets are relative to its start.
//
// Files are untrusted input: parse() validates everything the reference implementation validates
// (every byte of the data section belongs to exactly one tensor, sizes match dtype x shape, ...) plus
// duplicate keys, and reports any problem as kat::Error naming the file and the tensor/bytes at fault.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>
#include "kat/core/bf16.h"

namespace kat::io {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };
const char* dtype_name(DType);  // safetensors spelling: "F32", "BF16", "BOOL", ...
size_t dtype_size(DType);
bool dtype_is_integer(DType);  // I*, U8 and BOOL

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets in the data section
  int64_t numel() const;        // product of shape (1 for a scalar); validated not to overflow
};

class SafetensorsFile {
 public:
  static SafetensorsFile load(const std::string& path);  // reads the whole file; errors name the path
  static SafetensorsFile parse(std::vector<uint8_t> bytes, const std::string& source_name);

  bool has(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;  // throws naming the tensor and the file
  std::vector<std::string> names() const;                 // sorted
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& source() const { return source_; }

  // Copy to float32 converting like PyTorch's .float(): F16/BF16 exactly, F64 and 64/32-bit
  // integers rounded to nearest, BOOL as 0/1.
  std::vector<float> to_f32(const std::string& name) const;
  // As to_f32 into dst; count must equal numel (error names the tensor, expected and actual).
  void read_f32(const std::string& name, float* dst, int64_t count) const;
  // Integer and BOOL tensors only.
  std::vector<int64_t> to_i64(const std::string& name) const;
  // The tensor's bytes (little-endian, possibly unaligned: memcpy before reading multi-byte values).
  const uint8_t* raw(const std::string& name) const;

 private:
  std::string source_;
  std::vector<uint8_t> bytes_;  // the whole file
  size_t data_start_ = 0;       // 8 + header length
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

class SafetensorsWriter {
 public:
  // Copies numel * dtype_size bytes from data. Duplicate names, "__metadata__" and negative dims
  // are errors.
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data);
  void add_f32(const std::string& name, std::vector<int64_t> shape, const float* data);
  void set_metadata(const std::string& key, const std::string& value);
  // Tensors laid out in name order; header padded with spaces so the data starts at a multiple of 8.
  std::vector<uint8_t> serialize() const;
  // Atomic replace: write "<path>.tmp.<pid>", fsync, rename over path, fsync the directory. On
  // failure the temp file is removed and an existing file at path is untouched; errors name path.
  void write_atomic(const std::string& path) const;

 private:
  struct Entry {
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::map<std::string, Entry> tensors_;
  std::map<std::string, std::string> metadata_;
};

// IEEE half and bfloat16 <-> float. Narrowing rounds to nearest even; NaN stays NaN (quiet).
float half_to_float(uint16_t);
uint16_t float_to_half(float);
using kat::bf16_to_float;  // core/bf16.h
using kat::float_to_bf16;

}  // namespace kat::io
