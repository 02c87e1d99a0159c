// Using the engine from C++ (the public API, <kat/kat.h>): train a small KAT on Fashion-MNIST,
// load the best checkpoint back, classify test images on the CPU and, when a GPU is usable, on
// the GPU too.
//
//   build/train_and_classify [RUN_DIR] [EPOCHS] [TRAIN_SUBSET]     (defaults: a temp dir, 1, 6000)
//
// Built with the project (CMake target `train_and_classify`, linked against katlib); run by
// ctest as `example_train_and_classify`.
#include <kat/kat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

int main(int argc, char** argv) try {
  const std::string dir =
      argc > 1 ? argv[1] : (std::filesystem::temp_directory_path() / "kat_example_run").string();
  std::filesystem::remove_all(dir);

  // 1. Train: the same entry point as `kat train` (TrainConfig fields = its flags).
  kat::TrainConfig tc;
  tc.model = "kat_micro_patch4_28";
  tc.epochs = argc > 2 ? std::stoi(argv[2]) : 1;
  tc.train_subset = argc > 3 ? std::stoi(argv[3]) : 6000;
  tc.test_subset = 1000;
  tc.out_dir = dir;
  tc.progress = false;
  const kat::TrainResult res = kat::train(tc);
  std::printf("trained %lld steps: test top-1 %.2f%%, checkpoint %s\n", (long long)res.steps, res.final_top1,
              res.last_checkpoint.c_str());

  // 2. Load the best checkpoint (config, class names and normalisation come from its metadata).
  kat::LoadedModel lm = kat::load_model_for_inference(dir + "/best.safetensors", "", {}, /*use_ema=*/false);
  kat::KatModel& model = *lm.model;
  const int K = model.config().num_classes;

  // 3. Classify the first 8 test images with the eval transform of the run.
  const kat::data::Dataset test =
      kat::data::load_dataset(tc.data, /*train=*/false, false, model.config().img_size);
  kat::data::LoaderConfig lc;
  lc.aug.mean = lm.train.mean;
  lc.aug.std = lm.train.std;
  lc.aug.out_size = model.config().img_size;
  kat::data::Loader loader(test, kat::data::LoaderConfig::eval(lc, 8));
  loader.start_epoch(0, 0);
  kat::data::Batch batch;
  if (!loader.next(batch)) throw kat::Error("no test images");
  model.plan(batch.n);
  const float* logits = model.forward(batch.images.data(), batch.n);
  int correct = 0;
  for (int i = 0; i < batch.n; ++i) {
    const float* z = logits + size_t(i) * K;
    const int pred = int(std::max_element(z, z + K) - z);
    correct += pred == batch.labels[i];
    std::printf("  image %d: predicted %-12s true %s\n", i, lm.class_names.at(pred).c_str(),
                lm.class_names.at(batch.labels[i]).c_str());
  }
  std::printf("CPU: %d of %d correct\n", correct, batch.n);

  // 4. The same on a GPU when one is usable (bf16 compute, forward-only plan).
  std::string why;
  if (kat::cuda_available(&why)) {
    kat::GpuRunner gpu(model.config(), 0, kat::DType::BF16, kat::AdamWConfig{}, batch.n, /*training=*/false);
    gpu.upload_params(model.params.data());
    std::vector<float> gz(size_t(batch.n) * K);
    gpu.forward(batch.images.data(), batch.n, gz.data());
    int agree = 0;
    for (int i = 0; i < batch.n; ++i)
      agree += std::max_element(gz.begin() + i * K, gz.begin() + (i + 1) * K) - (gz.begin() + i * K) ==
               std::max_element(logits + i * K, logits + (i + 1) * K) - (logits + i * K);
    std::printf("GPU: same top-1 as the CPU for %d of %d images\n", agree, batch.n);
  } else {
    std::printf("GPU: skipped (%s)\n", why.c_str());
  }
  return correct > 0 ? 0 : 1;  // a trained model gets some of 8 right; 0 means something broke
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
