// safetensors reader/writer: round trips, fp16/bf16 conversions, validation of hostile files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>

#include "kat/core/error.h"
#include "kat/core/rng.h"
#include "kat/io/safetensors.h"

namespace fs = std::filesystem;
using namespace kat::io;

namespace {

// A file from a raw header string and data bytes; header_len overrides the length field.
std::vector<uint8_t> make_file(const std::string& header, const std::vector<uint8_t>& data = {},
                               std::optional<uint64_t> header_len = std::nullopt) {
  const uint64_t n = header_len.value_or(header.size());
  std::vector<uint8_t> out(8 + header.size());
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// Expect parse to throw kat::Error whose message contains every fragment (and the source name).
void expect_parse_error(const std::vector<uint8_t>& bytes, std::initializer_list<const char*> fragments) {
  try {
    SafetensorsFile::parse(bytes, "bad.safetensors");
    ADD_FAILURE() << "parse succeeded; expected an error containing '" << *fragments.begin() << "'";
  } catch (const kat::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("bad.safetensors"), std::string::npos) << msg;
    for (const char* f : fragments)
      EXPECT_NE(msg.find(f), std::string::npos) << "missing '" << f << "' in: " << msg;
  }
}

std::string tensor_json(const std::string& name, const char* dtype, const std::string& shape, uint64_t b,
                        uint64_t e) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
         std::to_string(b) + "," + std::to_string(e) + "]}";
}

// A small valid file exercising several dtypes, a scalar, an empty tensor and metadata.
std::vector<uint8_t> sample_file() {
  SafetensorsWriter w;
  const float f[6] = {1.5f, -2.0f, 0.0f, 3.25f, -0.0f, 1e-3f};
  const uint16_t h[3] = {float_to_half(1.0f), float_to_half(-0.5f), 0x7C00};
  const int8_t i8[4] = {-128, -1, 0, 127};
  const uint8_t b[2] = {0, 1};
  const int64_t i64[1] = {-42};
  w.add_f32("w", {2, 3}, f);
  w.add("h", DType::F16, {3}, h);
  w.add("i8", DType::I8, {2, 2}, i8);
  w.add("mask", DType::BOOL, {2}, b);
  w.add("step", DType::I64, {}, i64);
  w.add("empty", DType::F32, {0, 4}, nullptr);
  w.set_metadata("format", "pt");
  return w.serialize();
}

// Everything a successfully parsed file must satisfy, whatever its bytes were.
void check_invariants(const SafetensorsFile& f, size_t file_size) {
  const auto names = f.names();
  ASSERT_TRUE(std::is_sorted(names.begin(), names.end()));
  SafetensorsWriter w;
  for (const auto& [k, v] : f.metadata()) w.set_metadata(k, v);
  for (const auto& n : names) {
    const TensorInfo& t = f.info(n);
    ASSERT_EQ(t.name, n);
    ASSERT_LE(t.begin, t.end);
    ASSERT_LE(t.end, file_size);
    ASSERT_EQ(t.end - t.begin, static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype));
    ASSERT_EQ(f.to_f32(n).size(), static_cast<size_t>(t.numel()));
    if (dtype_is_integer(t.dtype)) {
      ASSERT_EQ(f.to_i64(n).size(), static_cast<size_t>(t.numel()));
    }
    w.add(n, t.dtype, t.shape, f.raw(n));
  }
  // Re-serializing and parsing again must reproduce the same tensors.
  const SafetensorsFile g = SafetensorsFile::parse(w.serialize(), "reserialized");
  ASSERT_EQ(g.names(), names);
  ASSERT_EQ(g.metadata(), f.metadata());
  for (const auto& n : names) {
    const TensorInfo &a = f.info(n), &b = g.info(n);
    ASSERT_EQ(a.dtype, b.dtype);
    ASSERT_EQ(a.shape, b.shape);
    ASSERT_EQ(0, std::memcmp(f.raw(n), g.raw(n), a.end - a.begin));
  }
}

}  // namespace

// ---- round trips ------------------------------------------------------------------------------

TEST(Safetensors, RoundTripEveryDtype) {
  const DType all[] = {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64,
                       DType::I32, DType::I16, DType::I8,  DType::U8,   DType::BOOL};
  SafetensorsWriter w;
  std::map<std::string, std::vector<uint8_t>> expect;
  kat::Rng rng(7);
  for (DType d : all) {
    const std::vector<int64_t> shape = {2, 3};
    std::vector<uint8_t> bytes(6 * dtype_size(d));
    for (auto& b : bytes) b = static_cast<uint8_t>(rng.below(d == DType::BOOL ? 2 : 256));
    w.add(std::string("t_") + dtype_name(d), d, shape, bytes.data());
    expect[std::string("t_") + dtype_name(d)] = bytes;
  }
  w.set_metadata("config", "{\"dim\": 4}");
  const auto bytes = w.serialize();
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u) << "data section must start 8-byte aligned";

  const auto f = SafetensorsFile::parse(bytes, "mem");
  EXPECT_EQ(f.names().size(), std::size(all));
  EXPECT_EQ(f.metadata().at("config"), "{\"dim\": 4}");
  for (DType d : all) {
    const std::string name = std::string("t_") + dtype_name(d);
    const TensorInfo& t = f.info(name);
    EXPECT_EQ(t.dtype, d);
    EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(t.numel(), 6);
    EXPECT_EQ(0, std::memcmp(f.raw(name), expect[name].data(), expect[name].size())) << name;
  }
}

TEST(Safetensors, ConvertsToF32AndI64) {
  const auto f = SafetensorsFile::parse(sample_file(), "sample");
  EXPECT_EQ(f.names(), (std::vector<std::string>{"empty", "h", "i8", "mask", "step", "w"}));
  EXPECT_EQ(f.to_f32("w"), (std::vector<float>{1.5f, -2.0f, 0.0f, 3.25f, -0.0f, 1e-3f}));
  const auto h = f.to_f32("h");
  EXPECT_EQ(h[0], 1.0f);
  EXPECT_EQ(h[1], -0.5f);
  EXPECT_TRUE(std::isinf(h[2]));
  EXPECT_EQ(f.to_f32("i8"), (std::vector<float>{-128, -1, 0, 127}));
  EXPECT_EQ(f.to_i64("i8"), (std::vector<int64_t>{-128, -1, 0, 127}));
  EXPECT_EQ(f.to_i64("mask"), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(f.to_i64("step"), (std::vector<int64_t>{-42}));
  EXPECT_EQ(f.info("step").numel(), 1);
  EXPECT_TRUE(f.to_f32("empty").empty());
  EXPECT_EQ(f.metadata().at("format"), "pt");

  float buf[5];
  try {
    f.read_f32("w", buf, 5);
    ADD_FAILURE();
  } catch (const kat::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("'w'"), std::string::npos) << m;
    EXPECT_NE(m.find("6 elements"), std::string::npos) << m;
    EXPECT_NE(m.find("holds 5"), std::string::npos) << m;
  }
  EXPECT_THROW(f.to_i64("w"), kat::Error);
  try {
    f.info("nope");
    ADD_FAILURE();
  } catch (const kat::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'nope'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("sample"), std::string::npos);
  }
}

TEST(Safetensors, WriterRejectsBadInput) {
  SafetensorsWriter w;
  const float x[2] = {1, 2};
  w.add_f32("a", {2}, x);
  EXPECT_THROW(w.add_f32("a", {2}, x), kat::Error);
  EXPECT_THROW(w.add_f32("__metadata__", {2}, x), kat::Error);
  EXPECT_THROW(w.add_f32("neg", {-1}, x), kat::Error);
  EXPECT_THROW(w.add_f32("huge", {1LL << 40, 1LL << 40}, x), kat::Error);
  EXPECT_THROW(w.add_f32("null", {2}, nullptr), kat::Error);
  w.add_f32("bad\xff", {2}, x);  // not UTF-8: only detectable when encoding the header
  EXPECT_THROW(w.serialize(), kat::Error);
}

TEST(Safetensors, ReadsGoldenFiles) {
  // Files written by the Python safetensors package (reference/export_golden.py), if present.
  int seen = 0;
  for (const auto& e : fs::directory_iterator(KAT_TEST_DATA "/golden")) {
    if (e.path().extension() != ".safetensors") continue;
    const auto f = SafetensorsFile::load(e.path().string());
    EXPECT_FALSE(f.names().empty()) << e.path();
    for (const auto& n : f.names()) EXPECT_EQ(f.to_f32(n).size(), static_cast<size_t>(f.info(n).numel()));
    ++seen;
  }
  if (seen == 0) GTEST_SKIP() << "no golden files";
}

// ---- fp16 / bf16 ------------------------------------------------------------------------------

TEST(Safetensors, HalfConversion) {
  EXPECT_EQ(half_to_float(0x3C00), 1.0f);
  EXPECT_EQ(half_to_float(0xC000), -2.0f);
  EXPECT_EQ(half_to_float(0x7BFF), 65504.0f);
  EXPECT_EQ(half_to_float(0x0001), std::ldexp(1.0f, -24));     // smallest subnormal
  EXPECT_EQ(half_to_float(0x03FF), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(half_to_float(0x0400), std::ldexp(1.0f, -14));     // smallest normal
  EXPECT_EQ(std::bit_cast<uint32_t>(half_to_float(0x8000)), 0x80000000u);
  EXPECT_EQ(half_to_float(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(half_to_float(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(half_to_float(0x7E00)));
  EXPECT_TRUE(std::isnan(half_to_float(0x7C01)));

  EXPECT_EQ(float_to_half(1.0f), 0x3C00);
  EXPECT_EQ(float_to_half(65504.0f), 0x7BFF);
  EXPECT_EQ(float_to_half(65519.0f), 0x7BFF);
  EXPECT_EQ(float_to_half(65520.0f), 0x7C00);  // tie between 65504 and 2^16 rounds to even -> inf
  EXPECT_EQ(float_to_half(1e10f), 0x7C00);
  EXPECT_EQ(float_to_half(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_EQ(float_to_half(std::nanf("")) & 0x7FFF, 0x7E00);
  EXPECT_EQ(float_to_half(-0.0f), 0x8000);
  EXPECT_EQ(float_to_half(1.0f + std::ldexp(1.0f, -11)), 0x3C00);      // tie -> even (down)
  EXPECT_EQ(float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // tie -> even (up)
  EXPECT_EQ(float_to_half(1.0f + std::ldexp(1.1f, -11)), 0x3C01);      // above tie
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -25)), 0x0000);             // tie at the bottom -> 0
  EXPECT_EQ(float_to_half(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(float_to_half(std::ldexp(3.0f, -25)), 0x0002);     // 1.5 ulp tie -> even
  EXPECT_EQ(float_to_half(std::ldexp(1023.5f, -24)), 0x0400);  // rounds up into the normals
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_EQ(float_to_half(std::numeric_limits<float>::denorm_min()), 0x0000);

  // Every non-NaN half survives half -> float -> half.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7C00) == 0x7C00 && (h & 0x3FF)) continue;
    ASSERT_EQ(float_to_half(half_to_float(static_cast<uint16_t>(h))), h) << std::hex << h;
  }
#ifdef __FLT16_MAX__
  // Against the compiler's own float -> _Float16 conversion (round to nearest even).
  kat::Rng rng(3);
  for (int i = 0; i < 200000; ++i) {
    const float f = std::bit_cast<float>(static_cast<uint32_t>(rng.next_u64()));
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_half(f), std::bit_cast<uint16_t>(static_cast<_Float16>(f))) << f;
  }
#endif
}

TEST(Safetensors, Bf16Conversion) {
  EXPECT_EQ(bf16_to_float(0x3F80), 1.0f);
  EXPECT_EQ(bf16_to_float(0xC040), -3.0f);
  EXPECT_EQ(bf16_to_float(0x0001), std::ldexp(1.0f, -133));  // subnormal
  EXPECT_EQ(bf16_to_float(0x7F80), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(bf16_to_float(0x7FC0)));

  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);      // tie -> even (down)
  EXPECT_EQ(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);  // tie -> even (up)
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.5f, -8)), 0x3F81);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()), 0x7F80);  // rounds to inf
  EXPECT_EQ(float_to_bf16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_EQ(float_to_bf16(std::nanf("")), 0x7FC0);
  EXPECT_EQ(float_to_bf16(-std::nanf("")), 0x7FC0);                     // like PyTorch: canonical NaN
  EXPECT_EQ(float_to_bf16(std::bit_cast<float>(0x00008000u)), 0x0000);  // subnormal tie -> even
  EXPECT_EQ(float_to_bf16(std::bit_cast<float>(0x00018000u)), 0x0002);
  EXPECT_EQ(float_to_bf16(-0.0f), 0x8000);
  for (uint32_t b = 0; b < 0x10000; ++b) {
    if ((b & 0x7F80) == 0x7F80 && (b & 0x7F)) continue;
    ASSERT_EQ(float_to_bf16(bf16_to_float(static_cast<uint16_t>(b))), b) << std::hex << b;
  }
}

// ---- validation -------------------------------------------------------------------------------

TEST(Safetensors, RejectsBadLengths) {
  expect_parse_error({1, 2, 3}, {"too short"});
  expect_parse_error(make_file("{}", {}, 1000), {"header length 1000 exceeds file size 10"});
  expect_parse_error(make_file("{}", {}, 200'000'000), {"header length 200000000 exceeds the limit"});
  expect_parse_error(make_file("{}", {}, ~0ull), {"header length 18446744073709551615 exceeds the limit"});
  expect_parse_error(make_file(""), {"not valid JSON"});
}

TEST(Safetensors, RejectsBadJson) {
  expect_parse_error(make_file("{\"a\":"), {"not valid JSON"});
  expect_parse_error(make_file("{} x"), {"not valid JSON"});
  expect_parse_error(make_file("{\"a\xff\":1}"), {"not valid JSON"});  // invalid UTF-8
  expect_parse_error(make_file("[1,2]"), {"must be a JSON object"});
  expect_parse_error(make_file("\"s\""), {"must be a JSON object"});
  expect_parse_error(make_file("{\"x\":[1]}"), {"tensor 'x'", "must be an object"});
  expect_parse_error(make_file("{\"x\":{\"dtype\":\"F32\",\"shape\":[]}}"),
                     {"tensor 'x'", "missing 'data_offsets'"});
  expect_parse_error(make_file("{\"x\":{\"shape\":[],\"data_offsets\":[0,4]}}"),
                     {"tensor 'x'", "missing 'dtype'"});
  expect_parse_error(make_file("{\"x\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}"),
                     {"tensor 'x'", "missing 'shape'"});
  expect_parse_error(make_file("{\"x\":{\"dtype\":5}}"), {"tensor 'x'", "dtype must be a string"});
  expect_parse_error(make_file("{\"x\":{\"dtype\":\"F8\"}}"), {"tensor 'x'", "unknown dtype 'F8'"});
  expect_parse_error(make_file("{\"x\":{\"shape\":{}}}"), {"tensor 'x'", "shape must be an array"});
  expect_parse_error(make_file("{\"x\":{\"shape\":[2,-1]}}"), {"tensor 'x'", "negative"});
  expect_parse_error(make_file("{\"x\":{\"shape\":[2.0]}}"), {"tensor 'x'", "non-integer"});
  expect_parse_error(make_file("{\"x\":{\"shape\":[\"2\"]}}"), {"tensor 'x'", "shape"});
  expect_parse_error(make_file("{\"x\":{\"shape\":[[2]]}}"), {"tensor 'x'", "shape"});
  expect_parse_error(make_file("{\"x\":{\"shape\":[1e3]}}"), {"tensor 'x'", "non-integer"});
  expect_parse_error(make_file("{\"x\":{\"shape\":[99999999999999999999]}}"), {"tensor 'x'", "non-integer"});
  expect_parse_error(make_file("{\"x\":{\"shape\":[9223372036854775808]}}"), {"tensor 'x'", "too large"});
  std::string rank65 = "1";
  for (int i = 0; i < 64; ++i) rank65 += ",1";
  expect_parse_error(make_file("{\"x\":{\"shape\":[" + rank65 + "]}}"), {"tensor 'x'", "more than 64 dimensions"});
  expect_parse_error(make_file("{\"x\":{\"data_offsets\":[0]}}"), {"tensor 'x'", "exactly 2"});
  expect_parse_error(make_file("{\"x\":{\"data_offsets\":[0,1,2]}}"), {"tensor 'x'", "exactly 2"});
  expect_parse_error(make_file("{\"x\":{\"data_offsets\":null}}"), {"tensor 'x'", "data_offsets must be"});
  expect_parse_error(make_file("{\"x\":{\"dtype\":\"F32\",\"extra\":1}}"),
                     {"tensor 'x'", "unknown field 'extra'"});
  expect_parse_error(make_file("{\"__metadata__\":{\"k\":1}}"), {"__metadata__", "'k'", "must be a string"});
  expect_parse_error(make_file("{\"__metadata__\":[]}"), {"__metadata__ must be an object"});
}

TEST(Safetensors, RejectsDuplicates) {
  const std::vector<uint8_t> data(4);
  expect_parse_error(
      make_file("{" + tensor_json("x", "F32", "[1]", 0, 4) + "," + tensor_json("x", "F32", "[1]", 0, 4) + "}",
                data),
      {"duplicate entry 'x'"});
  expect_parse_error(make_file("{\"x\":{\"dtype\":\"F32\",\"dtype\":\"F32\"}}"),
                     {"tensor 'x'", "duplicate field 'dtype'"});
  expect_parse_error(make_file("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}"),
                     {"duplicate __metadata__ key 'k'"});
  expect_parse_error(make_file("{\"__metadata__\":{},\"__metadata__\":{}}"), {"duplicate entry '__metadata__'"});
}

TEST(Safetensors, RejectsBadOffsets) {
  const std::vector<uint8_t> d8(8);
  auto one = [&](const char* dtype, const std::string& shape, uint64_t b, uint64_t e) {
    return make_file("{" + tensor_json("x", dtype, shape, b, e) + "}", d8);
  };
  expect_parse_error(one("F32", "[1]", 8, 4), {"tensor 'x'", "data_offsets [8, 4]"});
  expect_parse_error(one("F32", "[4]", 0, 16),
                     {"tensor 'x': data_offsets [0, 16] exceed the data section of 8 bytes"});
  expect_parse_error(one("F32", "[1]", 0, 18446744073709551615ull), {"tensor 'x'", "exceed the data section"});
  expect_parse_error(one("F32", "[3]", 0, 8), {"tensor 'x'", "needs 12"});
  expect_parse_error(one("F64", "[4294967296,4294967296]", 0, 8), {"tensor 'x'", "too many elements"});
  expect_parse_error(one("F64", "[4294967296,1073741824,2]", 0, 8), {"tensor 'x'", "too many elements"});
  expect_parse_error(one("F32", "[0]", 0, 0), {"bytes [0, 8)", "not covered"});  // whole data section unused
}

TEST(Safetensors, RejectsOverlapsAndGaps) {
  const std::vector<uint8_t> d12(12);
  auto two = [&](uint64_t a0, uint64_t a1, uint64_t b0, uint64_t b1) {
    return make_file(
        "{" + tensor_json("a", "F32", "[1]", a0, a1) + "," + tensor_json("b", "F32", "[1]", b0, b1) + "}", d12);
  };
  expect_parse_error(two(0, 4, 0, 4), {"'a' and 'b' overlap"});
  expect_parse_error(two(0, 4, 8, 12), {"bytes [4, 8)", "not covered"});
  expect_parse_error(two(0, 4, 4, 8), {"bytes [8, 12)", "not covered"});
  // Zero-size tensors may sit at any boundary, but not inside another tensor.
  const std::vector<uint8_t> d4(4);
  EXPECT_NO_THROW(SafetensorsFile::parse(
      make_file("{" + tensor_json("a", "F32", "[1]", 0, 4) + "," + tensor_json("z", "F32", "[0]", 4, 4) + "}", d4),
      "ok"));
  expect_parse_error(
      make_file("{" + tensor_json("a", "I16", "[2]", 0, 4) + "," + tensor_json("z", "F32", "[0]", 2, 2) + "}", d4),
      {"'a' and 'z' overlap"});
}

// ---- files ------------------------------------------------------------------------------------

TEST(Safetensors, AtomicWrite) {
  const fs::path dir = fs::temp_directory_path() / ("kat_st_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string path = (dir / "m.safetensors").string();
  const float a[2] = {1, 2}, b[3] = {3, 4, 5};

  SafetensorsWriter w1;
  w1.add_f32("a", {2}, a);
  w1.write_atomic(path);
  SafetensorsWriter w2;
  w2.add_f32("b", {3}, b);
  w2.write_atomic(path);  // replaces the existing file
  const auto f = SafetensorsFile::load(path);
  EXPECT_EQ(f.names(), std::vector<std::string>{"b"});
  EXPECT_EQ(f.to_f32("b"), (std::vector<float>{3, 4, 5}));

  // Renaming over a directory fails: the temp file must be gone, the directory untouched.
  const fs::path blocker = dir / "blocker";
  fs::create_directories(blocker / "inside");
  try {
    w1.write_atomic(blocker.string());
    ADD_FAILURE();
  } catch (const kat::Error& e) {
    EXPECT_NE(std::string(e.what()).find(blocker.string()), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::exists(blocker / "inside"));
  EXPECT_THROW(w1.write_atomic((dir / "missing" / "x.safetensors").string()), kat::Error);

  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"blocker", "m.safetensors"}));

  try {
    SafetensorsFile::load((dir / "nope.safetensors").string());
    ADD_FAILURE();
  } catch (const kat::Error& e) {
    EXPECT_NE(std::string(e.what()).find("nope.safetensors"), std::string::npos);
  }
  EXPECT_THROW(SafetensorsFile::load(dir.string()), kat::Error);  // a directory
  fs::remove_all(dir);
}

// Randomly mutated valid files: parse must either succeed with all invariants intact or throw
// kat::Error. Anything else (another exception, a crash, a sanitizer report) is a bug.
TEST(Safetensors, FuzzMutations) {
  const std::vector<uint8_t> base = sample_file();
  uint64_t hlen;
  std::memcpy(&hlen, base.data(), 8);
  const std::string header(base.begin() + 8, base.begin() + 8 + static_cast<long>(hlen));
  const char* snippets[] = {"-1",
                            "1.5",
                            "[]",
                            "{}",
                            "[0,0]",
                            "null",
                            "true",
                            "\"F16\"",
                            "\"BOOL\"",
                            "\"__metadata__\"",
                            "18446744073709551615",
                            "99999999999999999999",
                            "1e400",
                            "\"",
                            "\\u0000",
                            "\xff\xfe",
                            "{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}",
                            ",",
                            ":",
                            "[[[[[[[[[[[[",
                            "0"};
  kat::Rng rng(12345);
  int ok = 0, rejected = 0;
  for (int it = 0; it < 2000; ++it) {
    std::vector<uint8_t> bytes = base;
    auto set_len = [&](uint64_t n) { std::memcpy(bytes.data(), &n, 8); };
    switch (rng.below(6)) {
      case 0:  // bit flips anywhere
        for (int k = 1 + static_cast<int>(rng.below(4)); k > 0; --k)
          bytes[rng.below(bytes.size())] ^= static_cast<uint8_t>(1u << rng.below(8));
        break;
      case 1:  // truncation
        bytes.resize(rng.below(bytes.size()));
        break;
      case 2:  // header length changes: small nudges and wild values
        set_len(rng.below(2) ? hlen + rng.below(33) - 16 : rng.next_u64() >> rng.below(64));
        break;
      case 3:  // bit flips in the data section only (should usually still parse)
        bytes[8 + hlen + rng.below(bytes.size() - 8 - hlen)] ^= static_cast<uint8_t>(1u << rng.below(8));
        break;
      case 4:
      case 5: {  // splice a JSON fragment into the header and fix the length field
        std::string h = header;
        const size_t at = rng.below(h.size()), len = rng.below(8);
        h.replace(at, std::min(len, h.size() - at), snippets[rng.below(std::size(snippets))]);
        std::vector<uint8_t> data(base.begin() + 8 + static_cast<long>(hlen), base.end());
        if (rng.below(4) == 0) data.resize(rng.below(data.size() + 8));
        bytes = make_file(h, data);
        break;
      }
    }
    try {
      const auto f = SafetensorsFile::parse(bytes, "fuzz");
      check_invariants(f, bytes.size());
      ++ok;
    } catch (const kat::Error&) {
      ++rejected;
    } catch (const std::exception& e) {
      FAIL() << "iteration " << it << ": unexpected exception: " << e.what();
    } catch (...) {
      FAIL() << "iteration " << it << ": unexpected non-std exception";
    }
    if (HasFatalFailure()) FAIL() << "invariant broken at iteration " << it;
  }
  // Both outcomes must actually be exercised.
  EXPECT_GT(ok, 100);
  EXPECT_GT(rejected, 500);
}

// ---- seed corpus (also used by tests/fuzz/fuzz_safetensors.cpp) -------------------------------

namespace {
std::vector<std::pair<std::string, std::vector<uint8_t>>> corpus_seeds() {
  const std::vector<uint8_t> d8(8);
  std::vector<std::pair<std::string, std::vector<uint8_t>>> seeds;
  seeds.emplace_back("valid_sample.safetensors", sample_file());
  seeds.emplace_back("valid_empty.safetensors", SafetensorsWriter().serialize());
  SafetensorsWriter all;
  const uint8_t zeros[8] = {};
  for (DType d : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::I16, DType::I8,
                  DType::U8, DType::BOOL})
    all.add(std::string("t") + dtype_name(d), d, {1}, zeros);
  all.set_metadata("format", "pt");
  seeds.emplace_back("valid_all_dtypes.safetensors", all.serialize());
  seeds.emplace_back("bad_header_length.safetensors", make_file("{}", {}, 4096));
  seeds.emplace_back("bad_json.safetensors", make_file("{\"x\":{\"dtype\":\"F32\",", d8));
  seeds.emplace_back("bad_dtype.safetensors", make_file("{" + tensor_json("x", "F8_E4M3", "[8]", 0, 8) + "}", d8));
  seeds.emplace_back("bad_overlap.safetensors", make_file("{" + tensor_json("a", "F32", "[2]", 0, 8) + "," +
                                                              tensor_json("b", "F32", "[1]", 4, 8) + "}",
                                                          d8));
  seeds.emplace_back("bad_gap.safetensors", make_file("{" + tensor_json("a", "F32", "[1]", 4, 8) + "}", d8));
  seeds.emplace_back("bad_duplicate.safetensors", make_file("{" + tensor_json("a", "F64", "[1]", 0, 8) + "," +
                                                                tensor_json("a", "F64", "[1]", 0, 8) + "}",
                                                            d8));
  auto truncated = sample_file();
  truncated.resize(truncated.size() - 3);
  seeds.emplace_back("bad_truncated.safetensors", truncated);
  return seeds;
}
}  // namespace

// Rewrites tests/fuzz_corpus/safetensors. Run by hand:
//   kat_tests --gtest_also_run_disabled_tests --gtest_filter=SafetensorsCorpus.DISABLED_Regenerate
TEST(SafetensorsCorpus, DISABLED_Regenerate) {
  const fs::path dir = fs::path(KAT_TEST_DATA) / "fuzz_corpus" / "safetensors";
  fs::create_directories(dir);
  for (const auto& [name, bytes] : corpus_seeds()) {
    std::ofstream(dir / name, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
}

TEST(SafetensorsCorpus, ParsesEverySeed) {
  const fs::path dir = fs::path(KAT_TEST_DATA) / "fuzz_corpus" / "safetensors";
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    ++n;
    if (name.rfind("valid_", 0) == 0) {
      const auto f = SafetensorsFile::load(e.path().string());
      check_invariants(f, fs::file_size(e.path()));
    } else {
      EXPECT_THROW(SafetensorsFile::load(e.path().string()), kat::Error) << name;
    }
  }
  EXPECT_GE(n, 5);
}
