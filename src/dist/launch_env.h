// Where this process sits in a multi-process job, read from the launcher's environment.
//
// Clusters start one process per GPU with a launcher that tells each process its place through
// environment variables:
//   torchrun:  RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT
//   Slurm srun: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE (or
//              SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE), and the node list
//              (SLURM_STEP_NODELIST or SLURM_JOB_NODELIST) whose first host runs rank 0.
// torchrun's variables win when both are present (torchrun inside an salloc/sbatch allocation sees
// Slurm's job variables as well). MASTER_ADDR / MASTER_PORT, when set, also override the Slurm
// guesses, so `srun` users can pin the address themselves.
//
// The rendezvous (dist/rendezvous.h) uses master_addr and a port of its own: MASTER_PORT + 1 by
// default, because under torchrun MASTER_PORT is taken by torchrun's own store on rank 0's host.
#pragma once
#include <functional>
#include <optional>
#include <string>

namespace kat::dist {

struct LaunchEnv {
  std::string launcher;      // "torchrun", "slurm" or "single" (no launcher: one process)
  int rank = 0;              // this process, 0 .. world_size-1
  int world_size = 1;        // processes in the job
  int local_rank = 0;        // this process on its node: the GPU it takes
  int local_world_size = 1;  // processes on this node
  std::string master_addr;   // the host of rank 0 ("" for a single process)
  int master_port = 0;       // the launcher's port (MASTER_PORT; 0 when unknown)

  bool distributed() const { return world_size > 1; }
  // The port kat's own rendezvous listens on: `override_port` if > 0, else MASTER_PORT + 1, else
  // 29501 (torchrun's default MASTER_PORT is 29500).
  int rendezvous_port(int override_port = 0) const;
  std::string describe() const;  // "rank 3 of 8 (local 1 of 4, torchrun), rank 0 at host:29501"
};

// A getenv-like lookup: the value of a variable, or nullopt when unset. Tests pass their own.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup process_env();

// Reads the launcher's variables. Throws kat::Error naming the variable when one is malformed
// (not an integer, rank outside the world, ...) or when a launcher's set is incomplete.
LaunchEnv read_launch_env(const EnvLookup& env = process_env());

// The first host of a Slurm node list in its compressed form: "gpu[07-09,12],login1" -> "gpu07",
// "node3" -> "node3", "a[1-2]-ib,b" -> "a1-ib". Throws kat::Error on an unbalanced bracket.
std::string first_slurm_host(const std::string& nodelist);

// The tasks on the first node from a Slurm tasks-per-node list: "4(x2),3" -> 4, "8" -> 8.
int first_slurm_count(const std::string& tasks_per_node);

}  // namespace kat::dist
