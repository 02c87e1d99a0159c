// kat._engine: the engine for Python (kat/_engine_api.py wraps it: kat.models, kat.load, kat.train).
//   models()                         built-in model config names
//   model_config(name) -> str        the resolved config as JSON
//   infer_model(weights) -> (name, overrides)   the built-in model whose parameter names and shapes
//                                    a plain weights file matches (num_classes, in_chans, img_size
//                                    and patch_size taken from the tensors)
//   Model (load(weights, model, overrides, ema, device, precision)): predict(x) -> (logits,
//                                    features) on the CPU, or on a GPU (device "cuda[:N]", bf16
//                                    compute, as `kat infer --device`); precision as `kat infer
//                                    --precision` (kat::check_inference_precision); model "" on a
//                                    plain weights file: infer_model's answer
//   train(config_json, resume) -> dict   kat::train with a TrainConfig from JSON (its field names)
// Arrays cross as nanobind ndarrays (DLPack / buffer protocol): float32 (N, C, H, W) C-contiguous
// host memory is read in place; the outputs are new numpy arrays. Errors: kat::Error -> ValueError.
// The GIL is released while the engine computes.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../../apps/kat/device_flag.h"  // --device grammar, shared with the CLI
#include "kat/kat.h"

namespace nb = nanobind;
using namespace kat;

namespace {

using Images = nb::ndarray<const float, nb::ndim<4>, nb::c_contig, nb::device::cpu>;
using F32Array = nb::ndarray<nb::numpy, float>;

F32Array owned_array(std::vector<float>&& v, std::vector<size_t> shape) {
  auto* heap = new std::vector<float>(std::move(v));
  nb::capsule owner(heap, [](void* p) noexcept { delete static_cast<std::vector<float>*>(p); });
  return F32Array(heap->data(), shape.size(), shape.data(), owner);
}

// A loaded model and its forward: the CPU's kat::KatModel, or with device "cuda[:N]" a GpuRunner
// planned for inference (bf16 compute, what `kat infer --device cuda` runs), re-planned when a
// larger batch comes.
class Model {
 public:
  Model(LoadedModel&& m, const std::string& device, const std::string& precision)
      : m_(std::move(m)), device_(cli::parse_device(device)), precision_(precision) {
    if (device_ < 0)
      prepare_cpu_inference(*m_.model, precision_);
    else
      check_inference_precision(precision_, true);  // at load, not at the first predict
  }

  const ModelConfig& config() const { return m_.model->config(); }

  std::pair<F32Array, F32Array> predict(const Images& x, int batch) {
    const ModelConfig& c = config();
    KAT_CHECK(
        x.shape(1) == size_t(c.in_chans) && x.shape(2) == size_t(c.img_size) && x.shape(3) == size_t(c.img_size),
        "predict: input (", x.shape(0), ", ", x.shape(1), ", ", x.shape(2), ", ", x.shape(3), ") but ", c.name,
        " takes (N, ", c.in_chans, ", ", c.img_size, ", ", c.img_size, ")");
    KAT_CHECK(batch > 0, "predict: batch must be > 0, got ", batch);
    const int64_t N = int64_t(x.shape(0)), K = c.num_classes, T = c.tokens(), D = c.embed_dim;
    const int64_t per_img = int64_t(c.in_chans) * c.img_size * c.img_size;
    std::vector<float> logits(size_t(N * K)), feats(size_t(N * T * D));
    {
      nb::gil_scoped_release release;
      KatModel& model = *m_.model;
      const int max_batch = int(std::min<int64_t>(std::max<int64_t>(N, 1), batch));
      if (device_ >= 0 && gpu_batch_ < max_batch) {
        gpu_.reset();
        gpu_ = make_inference_runner(model, device_, max_batch, precision_);
        gpu_batch_ = max_batch;
      }
      if (device_ < 0 && model.planned_batch() < max_batch) model.plan(max_batch);
      for (int64_t b0 = 0; b0 < N; b0 += batch) {
        const int nb_ = int(std::min<int64_t>(batch, N - b0));
        if (gpu_) {
          gpu_->forward(x.data() + b0 * per_img, nb_, logits.data() + b0 * K, feats.data() + b0 * T * D);
          continue;
        }
        const float* z = model.forward(x.data() + b0 * per_img, nb_);
        std::copy(z, z + nb_ * K, logits.begin() + b0 * K);
        std::copy(model.features(), model.features() + nb_ * T * D, feats.begin() + b0 * T * D);
      }
    }
    return {owned_array(std::move(logits), {size_t(N), size_t(K)}),
            owned_array(std::move(feats), {size_t(N), size_t(T), size_t(D)})};
  }

  std::vector<std::string> class_names() const { return m_.class_names; }
  bool from_checkpoint() const { return m_.from_checkpoint; }

 private:
  LoadedModel m_;
  int device_ = -1;        // -1: the CPU
  std::string precision_;  // check_inference_precision's values
  std::unique_ptr<GpuRunner> gpu_;
  int gpu_batch_ = 0;
};

// The built-in config (plus overrides) whose parameter table the file's tensors match exactly.
std::pair<std::string, std::vector<std::string>> infer_model(const std::string& weights) {
  const auto f = io::SafetensorsFile::load(weights);
  const auto shape = [&](const std::string& n) { return f.info(n).shape; };
  KAT_CHECK(
      f.has("head.weight") && f.has("pos_embed") && f.has("patch_embed.proj.weight"), weights,
      ": not a KAT/DeiT weights file with timm names (no head.weight / pos_embed / patch_embed.proj.weight); "
      "pass model=");
  const auto head = shape("head.weight"), pos = shape("pos_embed"), patch = shape("patch_embed.proj.weight");
  KAT_CHECK(head.size() == 2 && pos.size() == 3 && patch.size() == 4, weights, ": unexpected tensor ranks");
  const int64_t grid = int64_t(std::lround(std::sqrt(double(pos[1] - 1))));
  std::vector<std::string> overrides = {
      "num_classes=" + std::to_string(head[0]), "in_chans=" + std::to_string(patch[1]),
      "patch_size=" + std::to_string(patch[2]), "img_size=" + std::to_string(grid * patch[2])};
  for (const auto& name : builtin_config_names()) {
    ModelConfig c = ModelConfig::load(name);
    try {
      for (const auto& kv : overrides) c.apply_override(kv);
      c.validate();
    } catch (const Error&) {
      continue;
    }
    const KatModel probe(c);
    const auto& specs = probe.table().specs();
    if (specs.size() != f.names().size()) continue;
    const bool match = std::all_of(specs.begin(), specs.end(),
                                   [&](const ParamSpec& s) { return f.has(s.name) && shape(s.name) == s.shape; });
    if (match) return {name, overrides};
  }
  throw Error(weights + ": no built-in model has exactly these tensors (names and shapes); pass model=");
}

// model "" on a plain weights file (no config in its metadata): the config from the tensor shapes.
Model load(const std::string& weights, const std::string& model, const std::vector<std::string>& overrides,
           bool ema, const std::string& device, const std::string& precision) {
  std::string name = model;
  std::vector<std::string> ov = overrides;
  if (name.empty() && !io::SafetensorsFile::load(weights).metadata().count("model_config")) {
    auto [inferred, inferred_ov] = infer_model(weights);
    name = inferred;
    ov.insert(ov.begin(), inferred_ov.begin(), inferred_ov.end());
  }
  return Model(load_model_for_inference(weights, name, ov, ema), device, precision);
}

nb::dict train_run(const std::string& config_json, const std::string& resume) {
  TrainConfig c = TrainConfig::from_json(config_json, "kat.train options");
  c.devices = cli::parse_devices(c.device);
  TrainResult r;
  {
    nb::gil_scoped_release release;
    r = kat::train(c, resume);
  }
  nb::dict d;
  d["steps"] = r.steps;
  d["epochs_done"] = r.epochs_done;
  d["final_top1"] = r.final_top1;
  d["final_loss"] = r.final_loss;
  d["best_top1"] = r.best_top1;
  d["final_ema_top1"] = r.final_ema_top1;
  d["interrupted"] = r.interrupted;
  d["last_checkpoint"] = r.last_checkpoint;
  d["step_losses"] = r.step_losses;
  d["train_seconds"] = r.train_seconds;
  d["data_wait_seconds"] = r.data_wait_seconds;
  return d;
}

}  // namespace

NB_MODULE(_engine, m) {
  m.doc() = "kat's engine (use kat.models / kat.load / kat.train)";
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  m.def("models", &builtin_config_names);
  m.def("model_config", [](const std::string& name) { return ModelConfig::load(name).to_json(); });
  m.def("train_config_defaults", [] { return TrainConfig{}.to_json(); });
  m.def("infer_model", &infer_model, nb::arg("weights"));
  nb::class_<Model>(m, "Model")
      .def("predict", &Model::predict, nb::arg("x"), nb::arg("batch") = 64)
      .def_prop_ro("config_json", [](const Model& s) { return s.config().to_json(); })
      .def_prop_ro("class_names", &Model::class_names)
      .def_prop_ro("from_checkpoint", &Model::from_checkpoint);
  m.def("load", &load, nb::arg("weights"), nb::arg("model"), nb::arg("overrides"), nb::arg("ema"),
        nb::arg("device") = "cpu", nb::arg("precision") = "auto");
  m.def("train", &train_run, nb::arg("config_json"), nb::arg("resume") = "");
}
