#include "dist/launch_env.h"

#include <cerrno>
#include <cstdlib>
#include <limits>

#include "kat/core/error.h"

namespace kat::dist {

namespace {

// A non-negative int from a variable, else an error that names it and its value.
int parse_count(const std::string& name, const std::string& value) {
  KAT_CHECK(!value.empty(), "environment variable ", name, " is set but empty");
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(value.c_str(), &end, 10);
  KAT_CHECK(errno == 0 && end && *end == '\0' && v >= 0 && v <= std::numeric_limits<int>::max(),
            "environment variable ", name, "='", value, "' is not a non-negative integer");
  return int(v);
}

std::optional<int> get_int(const EnvLookup& env, const std::string& name) {
  const auto v = env(name);
  if (!v) return std::nullopt;
  return parse_count(name, *v);
}

int require_int(const EnvLookup& env, const std::string& name, const std::string& launcher) {
  const auto v = get_int(env, name);
  KAT_CHECK(v.has_value(), launcher, " launch: environment variable ", name,
            " is not set (the launcher sets it for every process; are you running under ", launcher, "?)");
  return *v;
}

void check_place(const LaunchEnv& e, const std::string& rank_var, const std::string& world_var,
                 const std::string& local_var) {
  KAT_CHECK(e.world_size >= 1, world_var, "=", e.world_size, ": a job has at least one process");
  KAT_CHECK(e.rank < e.world_size, rank_var, "=", e.rank, " is outside the job (", world_var, "=", e.world_size,
            ")");
  KAT_CHECK(e.local_world_size >= 1 && e.local_world_size <= e.world_size, "local process count ",
            e.local_world_size, " must be between 1 and the world size ", e.world_size);
  KAT_CHECK(e.local_rank < e.local_world_size, local_var, "=", e.local_rank, " is outside this node's processes (",
            e.local_world_size, ")");
}

}  // namespace

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

std::string first_slurm_host(const std::string& nodelist) {
  // Hosts are separated by commas outside brackets; a bracket holds ranges of a numeric suffix.
  std::string host;
  for (size_t i = 0; i < nodelist.size(); ++i) {
    const char c = nodelist[i];
    if (c == '[') {
      // The first range's first number: up to ',', '-' or ']'.
      size_t j = i + 1;
      while (j < nodelist.size() && nodelist[j] != ',' && nodelist[j] != '-' && nodelist[j] != ']')
        host += nodelist[j++];
      // Skip to the closing bracket.
      while (j < nodelist.size() && nodelist[j] != ']') ++j;
      KAT_CHECK(j < nodelist.size(), "Slurm node list '", nodelist, "' has an unclosed '['");
      i = j;
      continue;
    }
    KAT_CHECK(c != ']', "Slurm node list '", nodelist, "' has a ']' without '['");
    if (c == ',') break;  // brackets were consumed above, so this comma separates hosts
    host += c;
  }
  KAT_CHECK(!host.empty(), "Slurm node list '", nodelist, "' names no host");
  return host;
}

int first_slurm_count(const std::string& tasks_per_node) {
  const std::string first = tasks_per_node.substr(0, tasks_per_node.find_first_of(",("));
  return parse_count("SLURM_NTASKS_PER_NODE", first);
}

int LaunchEnv::rendezvous_port(int override_port) const {
  if (override_port > 0) return override_port;
  if (master_port > 0) return master_port + 1;
  return 29501;
}

std::string LaunchEnv::describe() const {
  if (!distributed()) return "single process";
  return detail::concat("rank ", rank, " of ", world_size, " (local ", local_rank, " of ", local_world_size, ", ",
                        launcher, "), rank 0 at ", master_addr);
}

LaunchEnv read_launch_env(const EnvLookup& env) {
  LaunchEnv e;
  if (env("RANK") || env("WORLD_SIZE") || env("LOCAL_RANK")) {
    e.launcher = "torchrun";
    e.rank = require_int(env, "RANK", e.launcher);
    e.world_size = require_int(env, "WORLD_SIZE", e.launcher);
    e.local_rank = get_int(env, "LOCAL_RANK").value_or(0);
    e.local_world_size = get_int(env, "LOCAL_WORLD_SIZE").value_or(e.world_size);
    check_place(e, "RANK", "WORLD_SIZE", "LOCAL_RANK");
    if (e.world_size > 1) {
      const auto addr = env("MASTER_ADDR");
      KAT_CHECK(addr && !addr->empty(), "torchrun launch: MASTER_ADDR is not set (rank ", e.rank, " of ",
                e.world_size, " needs the address of rank 0)");
      e.master_addr = *addr;
    }
    e.master_port = get_int(env, "MASTER_PORT").value_or(0);
    return e;
  }
  if (env("SLURM_PROCID") && env("SLURM_NTASKS")) {
    e.launcher = "slurm";
    e.rank = require_int(env, "SLURM_PROCID", e.launcher);
    e.world_size = require_int(env, "SLURM_NTASKS", e.launcher);
    e.local_rank = get_int(env, "SLURM_LOCALID").value_or(0);
    e.local_world_size = e.world_size;
    for (const char* v : {"SLURM_NTASKS_PER_NODE", "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"}) {
      if (const auto t = env(v); t && !t->empty()) {
        e.local_world_size = first_slurm_count(*t);
        break;
      }
    }
    check_place(e, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID");
    if (const auto addr = env("MASTER_ADDR"); addr && !addr->empty()) {
      e.master_addr = *addr;
    } else if (e.world_size > 1) {
      std::optional<std::string> nodes = env("SLURM_STEP_NODELIST");
      if (!nodes) nodes = env("SLURM_JOB_NODELIST");
      if (!nodes) nodes = env("SLURM_NODELIST");
      KAT_CHECK(nodes && !nodes->empty(), "Slurm launch: neither MASTER_ADDR nor SLURM_STEP_NODELIST / ",
                "SLURM_JOB_NODELIST is set, so rank 0's host is unknown (export MASTER_ADDR=<host of rank 0>)");
      e.master_addr = first_slurm_host(*nodes);
    }
    e.master_port = get_int(env, "MASTER_PORT").value_or(0);
    return e;
  }
  e.launcher = "single";
  return e;
}

}  // namespace kat::dist
