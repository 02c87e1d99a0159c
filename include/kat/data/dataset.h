// In-memory image classification datasets: IDX (MNIST / Fashion-MNIST), CIFAR-10/100 binary and
// image folders (root/<class>/*.png|jpg). Every loader checks its input and throws kat::Error with a
// message naming the file (and the record index) at fault.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kat/data/image_io.h"

namespace kat::data {

// All images uint8 HWC in memory (N*H*W*C), labels int32 in [0, num_classes).
struct Dataset {
  int height = 0, width = 0, channels = 0, num_classes = 0;
  std::vector<uint8_t> pixels;  // (N, H, W, C)
  std::vector<int32_t> labels;  // (N)
  std::vector<std::string> class_names;
  std::string source;  // path / spec, for messages
  // Lazy image folders (load_image_folder with lazy = true): one file per sample, decoded when read
  // (`pixels` stays empty), so an ImageNet-size folder needs no memory for the decoded images.
  std::vector<std::string> files;
  int decode_size = 0;  // lazy: the square side images are resized / center-cropped to
  // Folders: > 0 when the images were fitted with timm's evaluation transform (see
  // load_image_folder), 0 with the training fit.
  double eval_crop_pct = 0.0;

  size_t size() const { return labels.size(); }
  size_t image_bytes() const { return static_cast<size_t>(height) * width * channels; }
  bool lazy() const { return pixels.empty() && !files.empty(); }
  // Eager datasets only (lazy ones have no pixel buffer): the stored image i.
  const uint8_t* image(size_t i) const { return pixels.data() + i * image_bytes(); }
  // Image i into out (image_bytes()): a copy (eager) or decode + resize + channel conversion,
  // exactly as the eager loader does it (lazy; errors throw kat::Error naming the file).
  void read_image(size_t i, uint8_t* out) const;
  // Lazy datasets only: image i as decoded from its file, full size (h x w x channels), not fitted.
  // The training loader's RandomResizedCrop samples from it, as timm does from the original file.
  void read_original(size_t i, std::vector<uint8_t>& out, int& h, int& w) const;
};

// Default location of Fashion-MNIST (spec "fashion-mnist").
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// IDX pair (gzip or raw; zlib reads both). `names`: "auto" (Fashion-MNIST names when either path
// contains "fashion", else digits), "fashion", "digits"/"mnist" or "none" (class names "0".."K-1").
Dataset load_idx(const std::string& images_path, const std::string& labels_path, const std::string& names = "auto",
                 int num_classes = 10);

// CIFAR binary batches. num_classes 10: records <label><3072 CHW>; 100: <coarse><fine><3072 CHW>
// (the fine label is used). Class names from batches.meta.txt (10) / fine_label_names.txt (100)
// next to the first file when present; built-in names for CIFAR-10 otherwise, "0".."99" for 100.
Dataset load_cifar(const std::vector<std::string>& batch_files, int num_classes);

// root/<class>/*.{png,jpg,jpeg} (case-insensitive extensions); classes sorted by folder name, files
// sorted by name. resize_to > 0: resize the shorter side to resize_to then center crop to a square;
// 0: keep sizes (they must all agree). channels: 0 = auto (3 unless every image is gray -> 1), or
// force 1 / 3. `classes` (optional): use this class list (e.g. the train split's) instead of the
// folder listing; folders not in it are an error. Corrupt images: Error naming the file, or, with
// skip_bad, skipped and counted in *skipped.
// lazy: list the files only and decode each image when it is read (needs resize_to > 0; channels
// 0 means 3 there, since deciding "any colour image?" would mean decoding them all; skip_bad is
// refused). Eager loading refuses a folder whose decoded images would take more than half of the
// machine's memory, naming the size and --lazy-data.
// eval_crop_pct > 0 (with resize_to > 0): fit each image with timm's evaluation transform instead
// (docs/MODEL.md §4: full decode, PIL bicubic resize of the shorter side to floor(resize_to /
// eval_crop_pct), center crop; eval_resize_center_crop), as for evaluating published checkpoints;
// images already resize_to x resize_to are kept as they are.
Dataset load_image_folder(const std::string& root, int resize_to = 0, bool skip_bad = false,
                          int* skipped = nullptr, int channels = 0,
                          const std::vector<std::string>* classes = nullptr, bool lazy = false,
                          double eval_crop_pct = 0.0);

// Dispatch on a spec string:
//   "fashion-mnist" (kFashionMnistDir) | "fashion-mnist:DIR" | "mnist:DIR" | "idx:DIR"
//       DIR holds {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
//   "cifar10:DIR"  data_batch_{1..5}.bin / test_batch.bin (DIR or DIR/cifar-10-batches-bin)
//   "cifar100:DIR" train.bin / test.bin (DIR or DIR/cifar-100-binary)
//   "folder:DIR"   DIR/train and DIR/val (or DIR/test); the eval split uses the train classes.
// folder_resize / skipped are passed to load_image_folder for "folder:" specs.
// folder_lazy / folder_channels / folder_eval_crop_pct: passed to load_image_folder (other kinds are
// always in memory, at their native size).
Dataset load_dataset(const std::string& spec, bool train, bool skip_bad = false, int folder_resize = 0,
                     int* skipped = nullptr, bool folder_lazy = false, int folder_channels = 0,
                     double folder_eval_crop_pct = 0.0);

// First min(n, size) samples.
Dataset subset(const Dataset& ds, size_t n);

// Built-in class name lists.
const std::vector<std::string>& fashion_mnist_class_names();
const std::vector<std::string>& cifar10_class_names();

}  // namespace kat::data
