#include "kat/data/dataset.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "kat/core/error.h"

namespace fs = std::filesystem;

namespace kat::data {

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                 "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

const std::vector<std::string>& cifar10_class_names() {
  static const std::vector<std::string> names = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                 "dog",      "frog",       "horse", "ship", "truck"};
  return names;
}

namespace {

std::string lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

std::vector<std::string> numbered_names(int k) {
  std::vector<std::string> v;
  for (int i = 0; i < k; ++i) v.push_back(std::to_string(i));
  return v;
}

// ---- IDX ---------------------------------------------------------------------------------------
class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path) {
    KAT_CHECK(fs::exists(path), "file ", path, ": not found");
    f_ = gzopen(path.c_str(), "rb");
    KAT_CHECK(f_ != nullptr, "file ", path, ": cannot open");
    gzbuffer(f_, 1 << 18);
  }
  ~GzFile() {
    if (f_) gzclose(f_);
  }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;
  // Reads up to n bytes; returns the count read (< n at end of data). Throws on a zlib error that is
  // not a plain truncation.
  size_t read(void* dst, size_t n) {
    size_t done = 0;
    auto* p = static_cast<uint8_t*>(dst);
    while (done < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - done, 1u << 30));
      const int r = gzread(f_, p + done, chunk);
      if (r < 0) {
        int errnum = 0;
        const char* msg = gzerror(f_, &errnum);
        // Z_BUF_ERROR = truncated gzip stream: report it like a short raw file.
        if (errnum == Z_BUF_ERROR) return done;
        throw Error("file " + path_ + ": read error (" + std::string(msg ? msg : "?") + ")");
      }
      if (r == 0) break;
      done += static_cast<size_t>(r);
    }
    return done;
  }
  uint32_t read_be32(const char* what) {
    uint8_t b[4];
    KAT_CHECK(read(b, 4) == 4, "file ", path_, ": truncated header (reading ", what, ")");
    return (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | uint32_t(b[3]);
  }
  bool at_end() {
    uint8_t b;
    return read(&b, 1) == 0;
  }

 private:
  std::string path_;
  gzFile f_ = nullptr;
};

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

}  // namespace

Dataset load_idx(const std::string& images_path, const std::string& labels_path, const std::string& names,
                 int num_classes) {
  KAT_CHECK(num_classes >= 1 && num_classes <= 256, "load_idx: num_classes must be in [1, 256], got ",
            num_classes);
  Dataset ds;
  ds.source = images_path;
  ds.num_classes = num_classes;
  size_t n = 0;
  {
    GzFile f(images_path);
    const uint32_t magic = f.read_be32("magic");
    KAT_CHECK(magic == 0x00000803u, "file ", images_path, ": bad magic ", hex32(magic),
              ", expected 0x00000803 (IDX uint8 images)");
    const uint32_t cnt = f.read_be32("image count"), rows = f.read_be32("rows"), cols = f.read_be32("cols");
    KAT_CHECK(cnt > 0 && cnt <= (1u << 28), "file ", images_path, ": bad image count ", cnt);
    KAT_CHECK(rows > 0 && rows <= 4096 && cols > 0 && cols <= 4096, "file ", images_path, ": bad image size ",
              rows, "x", cols);
    n = cnt;
    ds.height = static_cast<int>(rows);
    ds.width = static_cast<int>(cols);
    ds.channels = 1;
    const size_t per = static_cast<size_t>(rows) * cols;
    ds.pixels.resize(n * per);
    const size_t got = f.read(ds.pixels.data(), ds.pixels.size());
    KAT_CHECK(got == ds.pixels.size(), "file ", images_path, ": truncated at image ", got / per, " (header says ",
              n, " images of ", rows, "x", cols, ")");
    KAT_CHECK(f.at_end(), "file ", images_path, ": unexpected data after image ", n - 1, " (header says ", n,
              " images)");
  }
  {
    GzFile f(labels_path);
    const uint32_t magic = f.read_be32("magic");
    KAT_CHECK(magic == 0x00000801u, "file ", labels_path, ": bad magic ", hex32(magic),
              ", expected 0x00000801 (IDX uint8 labels)");
    const uint32_t cnt = f.read_be32("label count");
    KAT_CHECK(cnt == n, "file ", labels_path, ": has ", cnt, " labels but ", images_path, " has ", n, " images");
    std::vector<uint8_t> raw(n);
    const size_t got = f.read(raw.data(), n);
    KAT_CHECK(got == n, "file ", labels_path, ": truncated at label ", got, " (header says ", n, " labels)");
    KAT_CHECK(f.at_end(), "file ", labels_path, ": unexpected data after label ", n - 1);
    ds.labels.resize(n);
    for (size_t i = 0; i < n; ++i) {
      KAT_CHECK(raw[i] < num_classes, "file ", labels_path, ": label ", int(raw[i]), " at index ", i,
                " out of range [0, ", num_classes, ")");
      ds.labels[i] = raw[i];
    }
  }
  std::string mode = lower(names);
  if (mode == "auto") {
    const bool fashion = lower(images_path).find("fashion") != std::string::npos ||
                         lower(labels_path).find("fashion") != std::string::npos;
    mode = fashion ? "fashion" : "digits";
  }
  if (mode == "fashion" && num_classes == 10) {
    ds.class_names = fashion_mnist_class_names();
  } else if (mode == "fashion" || mode == "digits" || mode == "mnist" || mode == "none") {
    ds.class_names = numbered_names(num_classes);
  } else {
    throw Error("load_idx: unknown class names '" + names + "' (expected auto, fashion, digits or none)");
  }
  return ds;
}

// ---- CIFAR -----------------------------------------------------------------------------------
namespace {
std::vector<std::string> read_name_file(const fs::path& p) {
  std::vector<std::string> out;
  std::ifstream f(p);
  std::string line;
  while (std::getline(f, line)) {
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    size_t b = 0;
    while (b < line.size() && std::isspace(static_cast<unsigned char>(line[b]))) ++b;
    if (b < line.size()) out.push_back(line.substr(b));
  }
  return out;
}
}  // namespace

Dataset load_cifar(const std::vector<std::string>& batch_files, int num_classes) {
  KAT_CHECK(num_classes == 10 || num_classes == 100, "load_cifar: num_classes must be 10 or 100, got ",
            num_classes);
  KAT_CHECK(!batch_files.empty(), "load_cifar: no batch files given");
  const size_t label_bytes = num_classes == 10 ? 1 : 2, img = 3072, rec = label_bytes + img;
  Dataset ds;
  ds.height = ds.width = 32;
  ds.channels = 3;
  ds.num_classes = num_classes;
  ds.source = batch_files.front();
  for (const auto& path : batch_files) {
    KAT_CHECK(fs::exists(path), "file ", path, ": not found");
    std::ifstream f(path, std::ios::binary);
    KAT_CHECK(f, "file ", path, ": cannot open");
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    KAT_CHECK(!bytes.empty(), "file ", path, ": empty");
    const size_t n = bytes.size() / rec;
    KAT_CHECK(bytes.size() % rec == 0, "file ", path, ": truncated at image ", n, " (", bytes.size(),
              " bytes is not a multiple of the ", rec, "-byte CIFAR-", num_classes, " record)");
    const size_t base = ds.labels.size();
    ds.labels.resize(base + n);
    ds.pixels.resize((base + n) * img);
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* r = bytes.data() + i * rec;
      if (num_classes == 100)
        KAT_CHECK(r[0] < 20, "file ", path, ": coarse label ", int(r[0]), " at index ", i,
                  " out of range [0, 20)");
      const int lab = r[label_bytes - 1];
      KAT_CHECK(lab < num_classes, "file ", path, ": label ", lab, " at index ", i, " out of range [0, ",
                num_classes, ")");
      ds.labels[base + i] = lab;
      const uint8_t* chw = r + label_bytes;
      uint8_t* hwc = ds.pixels.data() + (base + i) * img;
      for (int p = 0; p < 1024; ++p) {
        hwc[p * 3 + 0] = chw[p];
        hwc[p * 3 + 1] = chw[1024 + p];
        hwc[p * 3 + 2] = chw[2048 + p];
      }
    }
  }
  const fs::path dir = fs::path(batch_files.front()).parent_path();
  const fs::path meta = dir / (num_classes == 10 ? "batches.meta.txt" : "fine_label_names.txt");
  std::vector<std::string> names;
  if (fs::exists(meta)) names = read_name_file(meta);
  if (names.size() >= static_cast<size_t>(num_classes)) {
    names.resize(num_classes);
    ds.class_names = names;
  } else {
    ds.class_names = num_classes == 10 ? cifar10_class_names() : numbered_names(num_classes);
  }
  return ds;
}

// ---- image folder ------------------------------------------------------------------------------
namespace {
bool is_image_ext(const fs::path& p) {
  const std::string e = lower(p.extension().string());
  return e == ".png" || e == ".jpg" || e == ".jpeg";
}
}  // namespace

namespace {
// One folder image as both loaders store it: decoded and, when size > 0, fitted to size x size (then
// h = w = size): eval_crop_pct > 0 applies timm's evaluation transform (full decode, PIL bicubic
// resize to floor(size / crop_pct), center crop) to any image not already size x size (a folder of
// 32 x 32 images for a 32 model is evaluated as trained, not zoomed), else the shorter side is resized to size
// (antialiased bilinear, JPEGs decoded at a reduced DCT scale when large) and center-cropped.
// false (err set) for an undecodable file.
bool decode_fitted(const std::string& path, int size, double eval_crop_pct, int& h, int& w, int& c,
                   std::vector<uint8_t>& out, std::string* err) {
  thread_local std::vector<uint8_t> decoded;
  const bool eval = size > 0 && eval_crop_pct > 0;
  if (!decode_image_file(path, h, w, c, size > 0 ? decoded : out, err, eval ? 0 : size)) return false;
  if (eval && h == size && w == size) {  // already at the model's size: as is (no zoom by 1 / crop_pct)
    out.swap(decoded);
  } else if (eval) {
    out.resize(static_cast<size_t>(size) * size * c);
    eval_resize_center_crop(decoded.data(), h, w, c, size, eval_crop_pct, out.data());
    h = w = size;
  } else if (size > 0) {
    out.resize(static_cast<size_t>(size) * size * c);
    resize_shorter_center_crop(decoded.data(), h, w, c, size, out.data());
    h = w = size;
  }
  return true;
}

size_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? size_t(pages) * size_t(page) : 0;
}
}  // namespace

namespace {
// Lazy image i of ds decoded (fitted as the dataset was built when size > 0, else at full size),
// still in the file's channel count c; a per-thread buffer. Errors name the file and the dataset.
const std::vector<uint8_t>& decode_lazy(const Dataset& ds, size_t i, int size, int& h, int& w, int& c) {
  thread_local std::vector<uint8_t> px;
  std::string err;
  KAT_CHECK(decode_fitted(ds.files[i], size, ds.eval_crop_pct, h, w, c, px, &err),
            err.empty() ? ds.files[i] + ": cannot decode" : err, " (lazy folder ", ds.source, ", image ", i, ")");
  return px;
}
}  // namespace

void Dataset::read_image(size_t i, uint8_t* out) const {
  KAT_CHECK(i < size(), source, ": image index ", i, " out of range [0, ", size(), ")");
  if (!lazy()) {
    std::copy(image(i), image(i) + image_bytes(), out);
    return;
  }
  int h = 0, w = 0, c = 0;
  const std::vector<uint8_t>& px = decode_lazy(*this, i, decode_size, h, w, c);
  convert_channels(px.data(), static_cast<size_t>(h) * w, c, channels, out);
}

void Dataset::read_original(size_t i, std::vector<uint8_t>& out, int& h, int& w) const {
  KAT_CHECK(lazy(), source, ": read_original needs a lazy folder dataset");
  KAT_CHECK(i < size(), source, ": image index ", i, " out of range [0, ", size(), ")");
  int c = 0;
  const std::vector<uint8_t>& px = decode_lazy(*this, i, 0, h, w, c);
  out.resize(static_cast<size_t>(h) * w * channels);
  convert_channels(px.data(), static_cast<size_t>(h) * w, c, channels, out.data());
}

Dataset load_image_folder(const std::string& root, int resize_to, bool skip_bad, int* skipped, int channels,
                          const std::vector<std::string>* classes, bool lazy, double eval_crop_pct) {
  KAT_CHECK(resize_to >= 0 && resize_to <= 4096, "load_image_folder: bad resize size ", resize_to);
  KAT_CHECK(eval_crop_pct >= 0 && eval_crop_pct <= 1.0,
            "load_image_folder: eval crop_pct must be in (0, 1] (0: off), got ", eval_crop_pct);
  KAT_CHECK(channels == 0 || channels == 1 || channels == 3, "load_image_folder: channels must be 0, 1 or 3, got ",
            channels);
  KAT_CHECK(fs::is_directory(root), "folder ", root, ": not found or not a directory");
  if (skipped) *skipped = 0;
  std::vector<std::string> dirs;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && !name.empty() && name[0] != '.') dirs.push_back(name);
  }
  std::sort(dirs.begin(), dirs.end());
  Dataset ds;
  ds.source = root;
  ds.eval_crop_pct = resize_to > 0 ? eval_crop_pct : 0.0;
  if (classes) {
    ds.class_names = *classes;
    for (const auto& d : dirs)
      KAT_CHECK(std::find(classes->begin(), classes->end(), d) != classes->end(), "folder ", root,
                ": class folder '", d, "' is not one of the ", classes->size(), " training classes");
  } else {
    ds.class_names = dirs;
  }
  KAT_CHECK(!ds.class_names.empty(), "folder ", root, ": no class sub-folders (expected ", root,
            "/<class>/*.png)");
  ds.num_classes = static_cast<int>(ds.class_names.size());

  // All files first (sorted per class), so the size of an eager load is known before decoding.
  std::vector<std::pair<int, fs::path>> listing;
  for (int k = 0; k < ds.num_classes; ++k) {
    const fs::path cdir = fs::path(root) / ds.class_names[k];
    if (!fs::is_directory(cdir)) continue;
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(cdir))
      if (e.is_regular_file() && is_image_ext(e.path())) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (auto& f : files) listing.emplace_back(k, std::move(f));
  }
  KAT_CHECK(!listing.empty(), "folder ", root, ": no .png/.jpg/.jpeg images found");
  if (lazy) {
    KAT_CHECK(resize_to > 0, "folder ", root,
              ": lazy loading needs a resize size (images are decoded to a fixed size)");
    KAT_CHECK(!skip_bad, "folder ", root,
              ": --skip-bad needs the in-memory loader (a lazy dataset only finds a corrupt",
              " file when it reads it, and then stops with its name)");
    ds.height = ds.width = ds.decode_size = resize_to;
    ds.channels = channels == 0 ? 3 : channels;
    ds.files.reserve(listing.size());
    ds.labels.reserve(listing.size());
    for (auto& [k, f] : listing) {
      ds.labels.push_back(k);
      ds.files.push_back(f.string());
    }
    return ds;
  }
  if (resize_to > 0) {
    const double bytes = double(listing.size()) * resize_to * resize_to * (channels == 1 ? 1 : 3);
    const double mem = double(physical_memory_bytes());
    KAT_CHECK(mem == 0 || bytes <= 0.5 * mem, "folder ", root, ": ", listing.size(), " images at ", resize_to, "x",
              resize_to, " would take ", bytes / 1e9, " GB decoded in memory (more than half of this machine's ",
              mem / 1e9, " GB); pass --lazy-data to decode them on the fly in the loader");
  }

  struct Img {
    int label, h, w, c;
    std::string path;
    std::vector<uint8_t> px;
  };
  // Decode + fit every file on all cores (an ImageNet val split: 50,000 JPEGs), then check them in
  // listing order, so the first bad file reported does not depend on the thread count.
  const int64_t nfiles = static_cast<int64_t>(listing.size());
  std::vector<Img> decoded(listing.size());
  std::vector<std::string> errors(listing.size());
  std::vector<char> ok(listing.size(), 0);
#pragma omp parallel for schedule(dynamic, 8)
  for (int64_t i = 0; i < nfiles; ++i) {
    Img& im = decoded[size_t(i)];
    im = Img{listing[size_t(i)].first, 0, 0, 0, listing[size_t(i)].second.string(), {}};
    try {
      ok[size_t(i)] =
          decode_fitted(im.path, resize_to, ds.eval_crop_pct, im.h, im.w, im.c, im.px, &errors[size_t(i)]);
    } catch (const std::exception& e) {  // no exception may leave an OpenMP region
      errors[size_t(i)] = e.what();
    }
    if (errors[size_t(i)].empty() && !ok[size_t(i)]) errors[size_t(i)] = im.path + ": cannot decode";
  }
  std::vector<Img> imgs;
  imgs.reserve(decoded.size());
  int bad = 0;
  for (size_t i = 0; i < decoded.size(); ++i) {
    Img& im = decoded[i];
    if (!ok[i]) {
      if (skip_bad) {
        ++bad;
        continue;
      }
      throw Error(errors[i]);
    }
    if (resize_to == 0 && !imgs.empty())
      KAT_CHECK(im.h == imgs.front().h && im.w == imgs.front().w, "file ", im.path, ": size ", im.h, "x", im.w,
                " differs from ", imgs.front().h, "x", imgs.front().w, " of ", imgs.front().path,
                " (pass a resize size to load folders of mixed sizes)");
    imgs.push_back(std::move(im));
  }
  if (skipped) *skipped = bad;
  KAT_CHECK(!imgs.empty(), "folder ", root, ": no decodable .png/.jpg/.jpeg images found",
            bad ? " (" + std::to_string(bad) + " corrupt skipped)" : std::string());
  int out_c = channels;
  if (out_c == 0) {
    out_c = 1;
    for (const auto& im : imgs)
      if (im.c == 3) out_c = 3;
  }
  ds.height = imgs.front().h;
  ds.width = imgs.front().w;
  ds.channels = out_c;
  const size_t np = static_cast<size_t>(ds.height) * ds.width;
  ds.pixels.resize(imgs.size() * np * out_c);
  ds.labels.resize(imgs.size());
  for (size_t i = 0; i < imgs.size(); ++i) {
    const Img& im = imgs[i];
    ds.labels[i] = im.label;
    convert_channels(im.px.data(), np, im.c, out_c, ds.pixels.data() + i * np * out_c);
  }
  return ds;
}

// ---- dispatch ------------------------------------------------------------------------------------
namespace {
std::string find_one(const fs::path& dir, const std::vector<std::string>& names, const std::string& spec) {
  for (const auto& n : names) {
    if (fs::exists(dir / n)) return (dir / n).string();
    if (fs::exists(dir / (n + ".gz"))) return (dir / (n + ".gz")).string();
  }
  throw Error("dataset '" + spec + "': missing " + (dir / names.front()).string() + "[.gz]");
}
}  // namespace

Dataset load_dataset(const std::string& spec, bool train, bool skip_bad, int folder_resize, int* skipped,
                     bool folder_lazy, int folder_channels, double folder_eval_crop_pct) {
  if (skipped) *skipped = 0;
  std::string kind = spec, dir;
  const size_t colon = spec.find(':');
  if (colon != std::string::npos) {
    kind = spec.substr(0, colon);
    dir = spec.substr(colon + 1);
  }
  kind = lower(kind);
  const std::string usage =
      " (expected fashion-mnist, fashion-mnist:DIR, mnist:DIR, idx:DIR, cifar10:DIR, cifar100:DIR or folder:DIR)";
  if (kind == "fashion-mnist" || kind == "fashion_mnist" || kind == "fashionmnist") {
    if (dir.empty()) dir = kFashionMnistDir;
    kind = "fashion";
  }
  KAT_CHECK(!dir.empty() || colon != std::string::npos, "unknown dataset spec '", spec, "'", usage);
  KAT_CHECK(!dir.empty(), "dataset spec '", spec, "': missing directory after ':'");
  KAT_CHECK(kind == "fashion" || kind == "mnist" || kind == "idx" || kind == "cifar10" || kind == "cifar100" ||
                kind == "folder",
            "unknown dataset spec '", spec, "'", usage);
  KAT_CHECK(fs::is_directory(dir), "dataset '", spec, "': directory ", dir, " not found");

  if (kind == "fashion" || kind == "mnist" || kind == "idx") {
    const std::string p = train ? "train" : "t10k";
    const std::string imgs = find_one(dir, {p + "-images-idx3-ubyte", p + "-images.idx3-ubyte"}, spec);
    const std::string labs = find_one(dir, {p + "-labels-idx1-ubyte", p + "-labels.idx1-ubyte"}, spec);
    Dataset ds = load_idx(imgs, labs, kind == "fashion" ? "fashion" : kind == "mnist" ? "digits" : "auto");
    return ds;
  }
  if (kind == "cifar10" || kind == "cifar100") {
    const bool c10 = kind == "cifar10";
    fs::path d = dir;
    const std::string probe = c10 ? "test_batch.bin" : "test.bin";
    const fs::path sub = d / (c10 ? "cifar-10-batches-bin" : "cifar-100-binary");
    if (!fs::exists(d / probe) && fs::exists(sub / probe)) d = sub;
    std::vector<std::string> files;
    if (c10 && train)
      for (int i = 1; i <= 5; ++i) files.push_back((d / ("data_batch_" + std::to_string(i) + ".bin")).string());
    else
      files.push_back((d / (c10 ? "test_batch.bin" : (train ? "train.bin" : "test.bin"))).string());
    for (const auto& f : files) KAT_CHECK(fs::exists(f), "dataset '", spec, "': missing ", f);
    return load_cifar(files, c10 ? 10 : 100);
  }
  // folder
  const fs::path root = dir;
  const fs::path tr = root / "train";
  KAT_CHECK(fs::is_directory(tr), "dataset '", spec, "': missing ", tr.string(),
            " (expected DIR/train and DIR/val)");
  if (train)
    return load_image_folder(tr.string(), folder_resize, skip_bad, skipped, folder_channels, nullptr, folder_lazy,
                             folder_eval_crop_pct);
  fs::path ev = root / "val";
  if (!fs::is_directory(ev)) ev = root / "test";
  KAT_CHECK(fs::is_directory(ev), "dataset '", spec, "': missing ", (root / "val").string(), " or ",
            (root / "test").string());
  std::vector<std::string> classes;
  for (const auto& e : fs::directory_iterator(tr)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && !name.empty() && name[0] != '.') classes.push_back(name);
  }
  std::sort(classes.begin(), classes.end());
  return load_image_folder(ev.string(), folder_resize, skip_bad, skipped, folder_channels, &classes, folder_lazy,
                           folder_eval_crop_pct);
}

Dataset subset(const Dataset& ds, size_t n) {
  Dataset out;
  out.height = ds.height;
  out.width = ds.width;
  out.channels = ds.channels;
  out.num_classes = ds.num_classes;
  out.class_names = ds.class_names;
  out.source = ds.source;
  n = std::min(n, ds.size());
  out.labels.assign(ds.labels.begin(), ds.labels.begin() + static_cast<std::ptrdiff_t>(n));
  out.decode_size = ds.decode_size;
  out.eval_crop_pct = ds.eval_crop_pct;
  if (ds.lazy())
    out.files.assign(ds.files.begin(), ds.files.begin() + static_cast<std::ptrdiff_t>(n));
  else
    out.pixels.assign(ds.pixels.begin(), ds.pixels.begin() + static_cast<std::ptrdiff_t>(n * ds.image_bytes()));
  return out;
}

}  // namespace kat::data
