// --device: the flag's grammar, parsed once by the CLI (the library takes device indices:
// TrainConfig::devices, GpuRunner's device). Header-only so the tests can check it directly.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "dist/launch_env.h"
#include "dist/rendezvous.h"
#include "kat/core/error.h"
#include "kat/train/train_config.h"

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

// kat train's flags for a job of several processes (torchrun / srun, one process per GPU).
struct JobFlags {
  std::string rendezvous;           // --rendezvous: "" / tcp / tcp:HOST:PORT / tcp::PORT / file:PATH
  double rendezvous_timeout = 300;  // --rendezvous-timeout
  double timeout = 600;             // --dist-timeout
};

// Where this process trains: --device into c.devices, and, when a launcher started it as one of
// several processes (WORLD_SIZE / SLURM_NTASKS > 1), its place in the job (c.procs): --device cuda
// takes GPU LOCAL_RANK (SLURM_LOCALID), --device cuda:N takes GPU N (a launcher that gives every
// process its own CUDA_VISIBLE_DEVICES: cuda:0); a list of GPUs or the CPU is an error saying what
// to use. The rendezvous is resolved here (tcp:HOST:PORT from MASTER_ADDR / MASTER_PORT + 1 unless
// given) so a bad flag is an error before any data is read. One process: c.procs stays a world of 1.
inline void resolve_train_devices(TrainConfig& c, const JobFlags& f,
                                  const dist::EnvLookup& env = dist::process_env()) {
  const dist::LaunchEnv e = dist::read_launch_env(env);
  c.devices = parse_devices(c.device);
  const dist::RendezvousSpec spec = dist::parse_rendezvous(f.rendezvous, e, f.rendezvous_timeout);
  KAT_CHECK(f.rendezvous_timeout > 0, "--rendezvous-timeout must be > 0 seconds, got ", f.rendezvous_timeout);
  KAT_CHECK(f.timeout > 0, "--dist-timeout must be > 0 seconds, got ", f.timeout);
  if (!e.distributed()) return;
  KAT_CHECK(c.devices.size() <= 1, "--device ", c.device, ": started as ", e.describe(),
            ", and each process of a job takes one GPU: use --device cuda (GPU LOCAL_RANK) or cuda:N. A list of "
            "GPUs is for one process without a launcher (`kat train --device ",
            c.device, "`)");
  KAT_CHECK(!c.devices.empty(), "--device ", c.device, ": started as ", e.describe(),
            ", and a job of several processes trains on GPUs: add --device cuda (each process takes GPU "
            "LOCAL_RANK)");
  if (c.device == "cuda") c.devices = {e.local_rank};
  c.procs.rank = e.rank;
  c.procs.world_size = e.world_size;
  c.procs.local_world_size = e.local_world_size;
  c.procs.rendezvous = spec.kind == dist::RendezvousSpec::Kind::File
                           ? "file:" + spec.path
                           : "tcp:" + spec.host + ":" + std::to_string(spec.port);
  for (const char* tag : {"TORCHELASTIC_RUN_ID", "SLURM_JOB_ID"})
    if (const auto v = env(tag); v && !v->empty()) {
      c.procs.job_tag = *v;
      break;
    }
  c.procs.rendezvous_timeout = f.rendezvous_timeout;
  c.procs.timeout = f.timeout;
}

}  // namespace kat::cli
