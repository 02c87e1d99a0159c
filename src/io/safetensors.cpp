#include "kat/io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "kat/core/error.h"

// Tensor bytes are read with memcpy into native integers: only correct on little-endian hosts.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace kat::io {
namespace {

using detail::concat;
using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference implementation's limit
constexpr size_t kMaxRank = 64;                    // bounds memory per shape array in hostile headers

constexpr DType kAllDTypes[] = {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64,
                                DType::I32, DType::I16, DType::I8,  DType::U8,   DType::BOOL};

template <typename T>
T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Element count and byte size of dtype x shape; false on a negative dim or uint64/int64 overflow.
bool checked_size(const std::vector<int64_t>& shape, DType dtype, uint64_t* numel, uint64_t* nbytes) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  }
  if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  *numel = n;
  return !__builtin_mul_overflow(n, static_cast<uint64_t>(dtype_size(dtype)), nbytes);
}

// SAX handler for the header. Building TensorInfos directly (instead of a json DOM) keeps memory
// proportional to the header size, lets us see duplicate keys (a DOM silently keeps the last one),
// and makes every structural error precise. Any event not explicitly accepted below throws.
// Container depth: 0 = outside the root, 1 = in the root object, 2 = in a tensor entry or
// __metadata__, 3 = in a shape / data_offsets array.
class HeaderParser {
 public:
  HeaderParser(const std::string& src, std::map<std::string, TensorInfo>& tensors,
               std::map<std::string, std::string>& meta)
      : src_(src), tensors_(tensors), meta_(meta) {}

  bool null() { unexpected("null"); }
  bool boolean(bool) { unexpected("a boolean"); }
  bool number_integer(json::number_integer_t) { unexpected("a negative number"); }  // only < 0 land here
  bool number_float(json::number_float_t, const std::string&) { unexpected("a non-integer number"); }
  bool binary(json::binary_t&) { unexpected("binary data"); }

  bool number_unsigned(json::number_unsigned_t v) {
    if (depth_ != 3) unexpected("a number");
    if (field_ == kShape) {
      if (array_.size() == kMaxRank)
        fail("tensor '", cur_->name, "': shape has more than ", kMaxRank, " dimensions");
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail("tensor '", cur_->name, "': shape dimension ", v, " is too large");
    } else if (array_.size() == 2) {
      fail("tensor '", cur_->name, "': data_offsets must have exactly 2 entries");
    }
    array_.push_back(v);
    return true;
  }

  bool string(std::string& s) {
    if (depth_ == 2 && in_meta_) {
      meta_.emplace(meta_key_, std::move(s));
      return true;
    }
    if (depth_ == 2 && field_ == kDtype) {
      const auto* it =
          std::find_if(std::begin(kAllDTypes), std::end(kAllDTypes), [&](DType d) { return s == dtype_name(d); });
      if (it == std::end(kAllDTypes)) fail("tensor '", cur_->name, "': unknown dtype '", s, "'");
      cur_->dtype = *it;
      return true;
    }
    unexpected("a string");
  }

  bool start_object(std::size_t) {
    if (depth_ == 1) {
      if (key_ == "__metadata__") {
        in_meta_ = true;
      } else {
        cur_ = &tensors_[key_];
        cur_->name = key_;
        fields_seen_ = 0;
      }
    } else if (depth_ != 0) {
      unexpected("an object");
    }
    ++depth_;
    return true;
  }

  bool key(std::string& k) {
    if (depth_ == 1) {
      if (k == "__metadata__" ? seen_meta_ : tensors_.count(k) != 0)
        fail("duplicate entry '", k, "' in the header");
      seen_meta_ |= k == "__metadata__";
      key_ = std::move(k);
    } else if (in_meta_) {
      if (meta_.count(k)) fail("duplicate __metadata__ key '", k, "'");
      meta_key_ = std::move(k);
    } else {
      field_ = k == "dtype" ? kDtype : k == "shape" ? kShape : k == "data_offsets" ? kOffsets : kNone;
      if (field_ == kNone) fail("tensor '", cur_->name, "': unknown field '", k, "'");
      if (fields_seen_ & (1u << field_)) fail("tensor '", cur_->name, "': duplicate field '", k, "'");
      fields_seen_ |= 1u << field_;
    }
    return true;
  }

  bool end_object() {
    if (--depth_ == 1) {
      if (!in_meta_) {
        for (auto [f, name] : {std::pair{kDtype, "dtype"}, {kShape, "shape"}, {kOffsets, "data_offsets"}})
          if (!(fields_seen_ & (1u << f))) fail("tensor '", cur_->name, "' is missing '", name, "'");
      }
      in_meta_ = false;
      field_ = kNone;
    }
    return true;
  }

  bool start_array(std::size_t) {
    if (depth_ != 2 || in_meta_ || (field_ != kShape && field_ != kOffsets)) unexpected("an array");
    array_.clear();
    ++depth_;
    return true;
  }

  bool end_array() {
    --depth_;
    if (field_ == kShape) {
      cur_->shape.assign(array_.begin(), array_.end());  // each entry checked <= INT64_MAX
    } else {
      if (array_.size() != 2) fail("tensor '", cur_->name, "': data_offsets must have exactly 2 entries");
      cur_->begin = array_[0];
      cur_->end = array_[1];
    }
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) {
    fail("header is not valid JSON (", ex.what(), ")");
  }

 private:
  enum Field { kNone, kDtype, kShape, kOffsets };

  template <typename... Args>
  [[noreturn]] void fail(Args&&... parts) const {
    throw Error(concat(src_, ": ", std::forward<Args>(parts)...));
  }

  // A value of the wrong kind at the current position.
  [[noreturn]] void unexpected(const char* got) const {
    if (depth_ == 0) fail("header must be a JSON object, got ", got);
    if (depth_ == 1) {
      if (key_ == "__metadata__") fail("__metadata__ must be an object, got ", got);
      fail("tensor '", key_, "': entry must be an object, got ", got);
    }
    if (in_meta_) fail("__metadata__ value for key '", meta_key_, "' must be a string, got ", got);
    if (field_ == kDtype) fail("tensor '", cur_->name, "': dtype must be a string, got ", got);
    if (field_ == kShape)
      fail("tensor '", cur_->name, "': shape must be an array of non-negative integers, got ", got);
    fail("tensor '", cur_->name, "': data_offsets must be an array of 2 non-negative integers, got ", got);
  }

  const std::string& src_;
  std::map<std::string, TensorInfo>& tensors_;
  std::map<std::string, std::string>& meta_;
  int depth_ = 0;
  std::string key_;       // current root-level key
  std::string meta_key_;  // current __metadata__ key
  bool in_meta_ = false, seen_meta_ = false;
  TensorInfo* cur_ = nullptr;  // entry being filled (map nodes are stable)
  Field field_ = kNone;
  unsigned fields_seen_ = 0;
  std::vector<uint64_t> array_;
};

// File descriptor that closes itself (load / write paths all throw).
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

// ---- dtypes and scalar conversions ------------------------------------------------------------

const char* dtype_name(DType d) {
  switch (d) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  throw Error(concat("internal error: invalid DType ", static_cast<int>(d)));
}

size_t dtype_size(DType d) {
  switch (d) {
    case DType::F64:
    case DType::I64: return 8;
    case DType::F32:
    case DType::I32: return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16: return 2;
    case DType::I8:
    case DType::U8:
    case DType::BOOL: return 1;
  }
  throw Error(concat("internal error: invalid DType ", static_cast<int>(d)));
}

bool dtype_is_integer(DType d) {
  return d == DType::I64 || d == DType::I32 || d == DType::I16 || d == DType::I8 || d == DType::U8 ||
         d == DType::BOOL;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F, man = h & 0x3FF;
  if (exp == 0x1F) return std::bit_cast<float>(sign | 0x7F800000 | (man << 13));  // inf / nan
  if (exp == 0) {
    if (man == 0) return std::bit_cast<float>(sign);
    // Subnormal: normalize so the leading 1 becomes the implicit bit.
    exp = 113;
    while (!(man & 0x400)) man <<= 1, --exp;
    return std::bit_cast<float>(sign | (exp << 23) | ((man & 0x3FF) << 13));
  }
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (man << 13));
}

// Integer-only so the result does not depend on the FP environment. Matches PyTorch (c10's
// fp16_ieee_from_fp32_value): round to nearest even, overflow to inf, NaN -> sign | 0x7E00.
uint16_t float_to_half(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f), ax = x & 0x7FFFFFFF;
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  if (ax > 0x7F800000) return sign | 0x7E00;   // nan
  if (ax >= 0x477FF000) return sign | 0x7C00;  // >= 65520 (halfway past 65504) rounds to inf
  if (ax < 0x38800000) {                       // below 2^-14: half subnormal (or zero)
    const uint32_t e = ax >> 23;
    const uint32_t m = (ax & 0x7FFFFF) | (e ? 0x800000 : 0);
    const uint32_t shift = 126 - (e ? e : 1);  // |f| / 2^-24 = m >> shift
    if (shift >= 25) return sign;              // m < 2^24 <= half ulp: rounds to zero
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (q & 1))) ++q;  // may carry into the smallest normal: fine
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t h = (ax - 0x38000000) >> 13;  // rebias exponent 127 -> 15, keep 10 mantissa bits
  const uint32_t rem = ax & 0x1FFF;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;  // carry into the exponent is correct
  return static_cast<uint16_t>(sign | h);
}

// Matches PyTorch's c10::BFloat16 round_to_nearest_even (NaN -> 0x7FC0).

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // parse() / add() guarantee no overflow
  return n;
}

// ---- reading ----------------------------------------------------------------------------------

SafetensorsFile SafetensorsFile::load(const std::string& path) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  KAT_CHECK(f.fd >= 0, "cannot open safetensors file '", path, "': ", std::strerror(errno));
  struct stat st {};
  KAT_CHECK(::fstat(f.fd, &st) == 0, "cannot stat '", path, "': ", std::strerror(errno));
  KAT_CHECK(S_ISREG(st.st_mode), "'", path, "' is not a regular file");
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  for (size_t got = 0; got < bytes.size();) {
    const ssize_t r = ::read(f.fd, bytes.data() + got, bytes.size() - got);
    if (r < 0 && errno == EINTR) continue;
    KAT_CHECK(r >= 0, "cannot read '", path, "': ", std::strerror(errno));
    KAT_CHECK(r > 0, "cannot read '", path, "': file shrank while reading");
    got += static_cast<size_t>(r);
  }
  return parse(std::move(bytes), path);
}

SafetensorsFile SafetensorsFile::parse(std::vector<uint8_t> bytes, const std::string& src) {
  KAT_CHECK(bytes.size() >= 8, src, ": file is ", bytes.size(), " bytes, too short for the 8-byte header length");
  const uint64_t n = load_le<uint64_t>(bytes.data());
  KAT_CHECK(n <= kMaxHeaderBytes, src, ": header length ", n, " exceeds the limit of ", kMaxHeaderBytes, " bytes");
  KAT_CHECK(n <= bytes.size() - 8, src, ": header length ", n, " exceeds file size ", bytes.size());

  SafetensorsFile file;
  file.source_ = src;
  HeaderParser sax(src, file.tensors_, file.metadata_);
  const char* hdr = reinterpret_cast<const char*>(bytes.data() + 8);
  try {
    json::sax_parse(hdr, hdr + n, &sax);  // strict: trailing non-whitespace is an error
  } catch (const json::exception& ex) {   // the handler throws kat::Error itself; this is a backstop
    throw Error(concat(src, ": header is not valid JSON (", ex.what(), ")"));
  }

  file.data_start_ = 8 + n;
  const uint64_t data_size = bytes.size() - file.data_start_;
  std::vector<const TensorInfo*> by_offset;
  for (const auto& [name, t] : file.tensors_) {
    const std::string range = concat("data_offsets [", t.begin, ", ", t.end, "]");
    uint64_t numel = 0, nbytes = 0;
    KAT_CHECK(checked_size(t.shape, t.dtype, &numel, &nbytes), src, ": tensor '", name, "': shape ",
              shape_str(t.shape), " has too many elements");
    KAT_CHECK(t.begin <= t.end, src, ": tensor '", name, "': ", range, " has begin > end");
    KAT_CHECK(t.end <= data_size, src, ": tensor '", name, "': ", range, " exceed the data section of ", data_size,
              " bytes");
    KAT_CHECK(t.end - t.begin == nbytes, src, ": tensor '", name, "': ", range, " span ", t.end - t.begin,
              " bytes but ", dtype_name(t.dtype), " ", shape_str(t.shape), " needs ", nbytes);
    by_offset.push_back(&t);
  }
  // Like the reference implementation: tensors must tile the data section exactly, no overlaps, no gaps.
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return std::pair(a->begin, a->end) < std::pair(b->begin, b->end);
  });
  uint64_t pos = 0;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo* t : by_offset) {
    KAT_CHECK(t->begin >= pos, src, ": tensors '", prev->name, "' and '", t->name, "' overlap in bytes [",
              t->begin, ", ", std::min(pos, t->end), ")");
    KAT_CHECK(t->begin == pos, src, ": bytes [", pos, ", ", t->begin,
              ") of the data section are not covered by any tensor");
    pos = t->end;
    prev = t;
  }
  KAT_CHECK(pos == data_size, src, ": bytes [", pos, ", ", data_size,
            ") of the data section are not covered by any tensor");
  file.bytes_ = std::move(bytes);
  return file;
}

bool SafetensorsFile::has(const std::string& name) const { return tensors_.count(name) != 0; }

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  const auto it = tensors_.find(name);
  KAT_CHECK(it != tensors_.end(), source_, ": no tensor named '", name, "'");
  return it->second;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

const uint8_t* SafetensorsFile::raw(const std::string& name) const {
  return bytes_.data() + data_start_ + info(name).begin;
}

std::vector<float> SafetensorsFile::to_f32(const std::string& name) const {
  std::vector<float> out(static_cast<size_t>(info(name).numel()));
  read_f32(name, out.data(), static_cast<int64_t>(out.size()));
  return out;
}

void SafetensorsFile::read_f32(const std::string& name, float* dst, int64_t count) const {
  const TensorInfo& t = info(name);
  KAT_CHECK(count == t.numel(), source_, ": tensor '", name, "' ", shape_str(t.shape), " has ", t.numel(),
            " elements but the destination holds ", count);
  const uint8_t* p = raw(name);
  const size_t n = static_cast<size_t>(count), es = dtype_size(t.dtype);
  auto each = [&](auto convert) {
    for (size_t i = 0; i < n; ++i) dst[i] = convert(p + i * es);
  };
  switch (t.dtype) {
    case DType::F32:
      if (n) std::memcpy(dst, p, n * 4);
      break;
    case DType::F64: each([](const uint8_t* q) { return static_cast<float>(load_le<double>(q)); }); break;
    case DType::F16: each([](const uint8_t* q) { return half_to_float(load_le<uint16_t>(q)); }); break;
    case DType::BF16: each([](const uint8_t* q) { return bf16_to_float(load_le<uint16_t>(q)); }); break;
    case DType::I64: each([](const uint8_t* q) { return static_cast<float>(load_le<int64_t>(q)); }); break;
    case DType::I32: each([](const uint8_t* q) { return static_cast<float>(load_le<int32_t>(q)); }); break;
    case DType::I16: each([](const uint8_t* q) { return static_cast<float>(load_le<int16_t>(q)); }); break;
    case DType::I8: each([](const uint8_t* q) { return static_cast<float>(static_cast<int8_t>(*q)); }); break;
    case DType::U8: each([](const uint8_t* q) { return static_cast<float>(*q); }); break;
    // Any non-zero byte is true (bytes other than 0/1 are not valid torch bools; be lenient).
    case DType::BOOL: each([](const uint8_t* q) { return *q ? 1.0f : 0.0f; }); break;
  }
}

std::vector<int64_t> SafetensorsFile::to_i64(const std::string& name) const {
  const TensorInfo& t = info(name);
  KAT_CHECK(dtype_is_integer(t.dtype), source_, ": tensor '", name, "' has dtype ", dtype_name(t.dtype),
            ", not an integer type");
  const uint8_t* p = raw(name);
  std::vector<int64_t> out(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    switch (t.dtype) {
      case DType::I64: out[i] = load_le<int64_t>(p + 8 * i); break;
      case DType::I32: out[i] = load_le<int32_t>(p + 4 * i); break;
      case DType::I16: out[i] = load_le<int16_t>(p + 2 * i); break;
      case DType::I8: out[i] = static_cast<int8_t>(p[i]); break;
      case DType::U8: out[i] = p[i]; break;
      case DType::BOOL: out[i] = p[i] != 0; break;
      default: break;  // excluded above
    }
  }
  return out;
}

// ---- writing ----------------------------------------------------------------------------------

void SafetensorsWriter::add(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data) {
  KAT_CHECK(name != "__metadata__", "safetensors writer: '__metadata__' is reserved and cannot name a tensor");
  KAT_CHECK(!tensors_.count(name), "safetensors writer: duplicate tensor name '", name, "'");
  uint64_t numel = 0, nbytes = 0;
  KAT_CHECK(checked_size(shape, dtype, &numel, &nbytes), "safetensors writer: tensor '", name, "': invalid shape ",
            shape_str(shape), " (negative or too many elements)");
  KAT_CHECK(data || nbytes == 0, "safetensors writer: tensor '", name, "': null data");
  const auto* p = static_cast<const uint8_t*>(data);
  tensors_.emplace(
      name, Entry{dtype, std::move(shape), nbytes ? std::vector<uint8_t>(p, p + nbytes) : std::vector<uint8_t>{}});
}

void SafetensorsWriter::add_f32(const std::string& name, std::vector<int64_t> shape, const float* data) {
  add(name, DType::F32, std::move(shape), data);
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

std::vector<uint8_t> SafetensorsWriter::serialize() const {
  json header = json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const auto& [name, e] : tensors_) {
    header[name] = {{"dtype", dtype_name(e.dtype)},
                    {"shape", e.shape},
                    {"data_offsets", json::array({offset, offset + e.bytes.size()})}};
    offset += e.bytes.size();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& ex) {  // invalid UTF-8 in a name or metadata string
    throw Error(concat("safetensors writer: cannot encode header: ", ex.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // data section starts 8-byte aligned

  std::vector<uint8_t> out(8);
  const uint64_t n = text.size();
  std::memcpy(out.data(), &n, 8);
  out.reserve(8 + n + offset);
  out.insert(out.end(), text.begin(), text.end());
  for (const auto& kv : tensors_) out.insert(out.end(), kv.second.bytes.begin(), kv.second.bytes.end());
  return out;
}

void SafetensorsWriter::write_atomic(const std::string& path) const {
  const std::vector<uint8_t> bytes = serialize();
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  // Raw fd I/O: there is no user-space buffer to fflush, fsync makes the data durable.
  Fd f{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644)};
  KAT_CHECK(f.fd >= 0, "cannot write '", path, "': creating '", tmp, "': ", std::strerror(errno));
  auto fail = [&](const char* step) {
    const int err = errno;
    if (f.fd >= 0) ::close(f.fd);
    f.fd = -1;
    ::unlink(tmp.c_str());
    throw Error(concat("cannot write '", path, "': ", step, ": ", std::strerror(err)));
  };
  for (size_t done = 0; done < bytes.size();) {
    const ssize_t w = ::write(f.fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail("write");
    done += static_cast<size_t>(w);
  }
  if (::fsync(f.fd) != 0) fail("fsync");
  const int fd = f.fd;
  f.fd = -1;
  if (::close(fd) != 0) fail("close");
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename");

  // Make the rename itself durable. EINVAL: the filesystem cannot sync directories (nothing to do).
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  Fd d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  KAT_CHECK(d.fd >= 0 && (::fsync(d.fd) == 0 || errno == EINVAL), "wrote '", path,
            "' but could not sync its directory: ", std::strerror(errno));
}

}  // namespace kat::io
