// kat eval: top-1, top-5, loss, per-class accuracy and confusion matrix of a checkpoint.
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <tuple>

#include "commands.h"
#include "device.h"
#include "kat/core/error.h"
#include "kat/data/data.h"
#include "kat/train/evaluate.h"
#include "kat/train/inference.h"

namespace kat::cli {

void register_eval(CLI::App& app) {
  auto* sub = app.add_subcommand("eval", "Evaluate a checkpoint on a dataset's test split");
  struct Opts {
    CheckpointOptions ck;
    std::string data, json_out, decode = "auto";
    bool train_split = false, no_progress = false, skip_bad = false, lazy = false;
    int batch = 256;
    double crop_pct = 0;  // 0: the checkpoint's (0.875 for plain weights)
  };
  auto o = std::make_shared<Opts>();
  add_checkpoint_options(sub, o->ck);
  sub->add_option("--data,-d", o->data,
                  "Dataset spec (default: the one the checkpoint was trained on, else fashion-mnist)");
  sub->add_flag("--train-split", o->train_split, "Evaluate on the training split instead of test");
  sub->add_flag("--skip-bad", o->skip_bad, "Skip corrupt images");
  sub->add_flag("--lazy-data", o->lazy, "folder: datasets: decode images when read instead of all up front");
  sub->add_option("--batch", o->batch, "Batch size")->capture_default_str();
  sub->add_option("--eval-crop-pct", o->crop_pct,
                  "folder: datasets: timm's evaluation fit, bicubic resize of the shorter side to img_size / "
                  "crop_pct then center crop (default: the checkpoint's, 0.875 for plain weights)")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_option("--json", o->json_out, "Also write the results (incl. confusion matrix) as JSON");
  sub->add_flag("--no-progress", o->no_progress, "No progress bar");
  sub->add_option("--decode", o->decode,
                  "folder: datasets: cpu (decode and fit on the CPU), gpu (nvJPEG and the eval fit on the GPU; "
                  "files read per batch, --device cuda, a build with nvJPEG), auto (gpu with --lazy-data on "
                  "a GPU when possible, else cpu)")
      ->check(CLI::IsMember({"auto", "cpu", "gpu"}))
      ->capture_default_str();
  registry().push_back({sub,
                        [o] {
    const CheckpointOptions& ck = o->ck;
    LoadedModel lm = load_checkpoint(ck);
    const std::string spec = !o->data.empty() ? o->data : lm.from_checkpoint ? lm.train.data : "fashion-mnist";
    // The data path, decided as `kat train` decides it (TrainConfig::resolve_decode).
    TrainConfig where;
    where.data = spec;
    where.device = ck.device;
    where.devices = parse_device(ck.device) < 0 ? std::vector<int>{} : std::vector<int>{parse_device(ck.device)};
    where.lazy_data = o->lazy;
    where.decode = o->decode;
    const bool gpu = where.resolve_decode() == "gpu", lazy = o->lazy || gpu;
    int skipped = 0;
    const double crop_pct = eval_crop_pct(o->crop_pct, lm.train);
    const data::Dataset ds =
        data::load_dataset(spec, o->train_split, gpu ? false : o->skip_bad, lm.model->config().img_size, &skipped,
                           lazy, lazy ? lm.model->config().in_chans : 0, crop_pct);
    data::LoaderConfig lc;
    std::tie(lc.aug.mean, lc.aug.std) = input_normalisation(lm.train, lm.model->config());
    lc.aug.out_size = lm.model->config().img_size;
    const data::LoaderConfig ec = data::LoaderConfig::eval(lc, o->batch);
    const auto engine = inference_engine(ck.device, *lm.model, o->batch, ck.precision);
    int64_t skipped_gpu = 0;
    const EvalResult r = gpu ? evaluate_gpu_decode(*engine, ds, ec, where.devices.at(0), o->skip_bad, &skipped_gpu,
                                                   !o->no_progress, "eval")
                             : evaluate(*engine, ds, ec, !o->no_progress, "eval");
    if (skipped + skipped_gpu > 0)
      std::printf("--skip-bad: skipped %lld corrupt images\n", (long long)(skipped + skipped_gpu));
    const auto& names = lm.class_names.empty() ? ds.class_names : lm.class_names;
    std::printf("%s on %s (%s split, %lld images)%s [%s, precision %s, decode %s]\n", ck.weights.c_str(),
                spec.c_str(), o->train_split ? "train" : "test", (long long)r.count, ck.ema ? " [EMA]" : "",
                ck.device.c_str(), ck.precision.c_str(), gpu ? "gpu" : "cpu");
    std::printf("top-1 %.2f%%  top-5 %.2f%%  loss %.4f\n\nper-class accuracy:\n", r.top1, r.top5, r.loss);
    for (int c = 0; c < ds.num_classes; ++c)
      std::printf("  %2d %-16s %6.2f%%\n", c, c < int(names.size()) ? names[c].c_str() : "", r.class_accuracy(c));
    std::printf("\nconfusion matrix (rows: true class, columns: predicted):\n     ");
    for (int c = 0; c < ds.num_classes; ++c) std::printf("%6d", c);
    std::printf("\n");
    for (int t = 0; t < ds.num_classes; ++t) {
      std::printf("  %2d ", t);
      for (int p = 0; p < ds.num_classes; ++p)
        std::printf("%6lld", (long long)r.confusion[size_t(t) * r.classes + p]);
      std::printf("\n");
    }
    if (!o->json_out.empty()) {
      nlohmann::json j = {
          {"weights", ck.weights},     {"data", spec},        {"count", r.count}, {"device", ck.device},
          {"precision", ck.precision}, {"top1", r.top1},      {"top5", r.top5},   {"loss", r.loss},
          {"confusion", r.confusion},  {"classes", r.classes}};
      std::ofstream(o->json_out) << j.dump(2) << "\n";
    }
    return 0;
                        }});
}

}  // namespace kat::cli
