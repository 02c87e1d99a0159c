// Rendezvous: every process of a job meets once at start-up and receives one blob from rank 0
// (the NCCL unique id, 128 bytes). Nobody leaves before all `world_size` processes have arrived,
// so a missing process is found here, with its rank named, instead of as a silent hang in NCCL.
//
//   tcp:HOST:PORT  rank 0 listens on PORT (all interfaces); the others connect to HOST:PORT,
//                  retrying while rank 0 is not up yet, and say who they are (job tag, world
//                  size, rank). When every rank has checked in, rank 0 sends each the blob.
//   file:PATH      a shared filesystem: rank r > 0 creates PATH.rank<r>; rank 0 waits for all of
//                  them, then writes PATH atomically (temporary file + rename) with the blob;
//                  the others wait for PATH. Rank 0 removes PATH.rank* once everyone is in; PATH
//                  itself stays (use a fresh path per job; a leftover one with another job tag is
//                  ignored).
// Both give up after `timeout_s` with a kat::Error: rank 0 names the ranks that never came; the
// others name the address or file they waited for.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dist/launch_env.h"

namespace kat::dist {

struct RendezvousSpec {
  enum class Kind { Tcp, File } kind = Kind::Tcp;
  std::string host;        // tcp: rank 0's host name or address
  int port = 0;            // tcp: the port rank 0 listens on
  std::string path;        // file: the shared file
  double timeout_s = 300;  // how long anyone waits for the others
  std::string job_tag;     // identifies the job (e.g. SLURM_JOB_ID); peers with another tag are refused
};

// --rendezvous: "" or "tcp" (rank 0's host from the launcher, port LaunchEnv::rendezvous_port()),
// "tcp:HOST:PORT", "tcp::PORT" (launcher's host, this port), or "file:PATH". Errors name the flag.
RendezvousSpec parse_rendezvous(const std::string& flag, const LaunchEnv& env, double timeout_s = 300);

// Every rank calls this once. Rank 0 passes the blob; every rank (rank 0 too) gets it back.
std::vector<uint8_t> share_from_rank0(const RendezvousSpec& spec, int rank, int world_size,
                                      const std::vector<uint8_t>& blob);

}  // namespace kat::dist
