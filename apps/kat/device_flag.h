// --device: the flag's grammar, parsed once by the CLI (the library takes device indices:
// TrainConfig::devices, GpuRunner's device). Header-only so the tests can check it directly.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "dist/launch_env.h"
#include "kat/core/error.h"

namespace kat::cli {

// "cpu" -> -1; "cuda" -> 0; "cuda:N" -> N. Anything else is an error naming the flag.
inline int parse_device(const std::string& d) {
  if (d == "cpu") return -1;
  if (d == "cuda") return 0;
  if (d.rfind("cuda:", 0) == 0) {
    try {
      size_t pos = 0;
      const int n = std::stoi(d.substr(5), &pos);
      if (pos == d.size() - 5 && n >= 0) return n;
    } catch (...) {
    }
  }
  throw Error("--device '" + d + "': expected cpu, cuda or cuda:N");
}

// Training devices: "cpu" -> {}; "cuda" -> {0}; "cuda:N" -> {N}; "cuda:0,1,2,3" -> {0, 1, 2, 3}
// (data parallel, see GpuGroup). Repeated or malformed indices are errors naming the flag.
inline std::vector<int> parse_devices(const std::string& d) {
  const size_t comma = d.find(',');
  if (comma == std::string::npos) {
    const int one = parse_device(d);
    return one < 0 ? std::vector<int>{} : std::vector<int>{one};
  }
  KAT_CHECK(d.rfind("cuda:", 0) == 0, "--device '", d, "': a list of GPUs is written cuda:0,1,...");
  std::vector<int> out;
  size_t pos = 5;
  while (pos <= d.size()) {
    const size_t end = std::min(d.find(',', pos), d.size());
    const int n = parse_device("cuda:" + d.substr(pos, end - pos));
    KAT_CHECK(std::find(out.begin(), out.end(), n) == out.end(), "--device '", d, "': GPU ", n,
              " is listed twice");
    out.push_back(n);
    pos = end + 1;
  }
  return out;
}

// Started as one of several processes by torchrun or srun (WORLD_SIZE / SLURM_NTASKS > 1)? Every
// process would train the whole model on the same GPU and write the same run directory, so refuse
// with what to do instead until one-process-per-GPU jobs exist (issue #14). A single process (no
// launcher, or a launcher with one process) goes on. Malformed launcher variables are errors
// naming the variable.
inline void refuse_multi_process_launch(const char* command, const dist::EnvLookup& env = dist::process_env()) {
  const dist::LaunchEnv e = dist::read_launch_env(env);
  KAT_CHECK(!e.distributed(), command, ": started as ", e.describe(),
            ", but kat does not run one process per GPU yet. Start one process and give it all the GPUs of "
            "the node instead: `kat ",
            command,
            " --device cuda:0,1,...` (data parallel over NCCL); jobs "
            "across several nodes are not supported yet.");
}

}  // namespace kat::cli
