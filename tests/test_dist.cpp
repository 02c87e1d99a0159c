// Multi-process job plumbing without GPUs: the launcher environment (torchrun, Slurm) and the
// rendezvous that hands rank 0's NCCL id to every process, with real processes (fork) on the
// loopback address and on a shared file.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <thread>

#include "dist/launch_env.h"
#include "dist/rendezvous.h"
#include "test_util.h"

namespace kat::dist {
namespace {

EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars](const std::string& k) -> std::optional<std::string> {
    auto it = vars.find(k);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(LaunchEnv, SingleProcessWithoutLauncher) {
  const LaunchEnv e = read_launch_env(env_of({}));
  EXPECT_EQ(e.launcher, "single");
  EXPECT_FALSE(e.distributed());
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.world_size, 1);
}

TEST(LaunchEnv, Torchrun) {
  const LaunchEnv e = read_launch_env(env_of({{"RANK", "5"},
                                              {"WORLD_SIZE", "16"},
                                              {"LOCAL_RANK", "1"},
                                              {"LOCAL_WORLD_SIZE", "8"},
                                              {"MASTER_ADDR", "node07"},
                                              {"MASTER_PORT", "29500"}}));
  EXPECT_EQ(e.launcher, "torchrun");
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.world_size, 16);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_world_size, 8);
  EXPECT_EQ(e.master_addr, "node07");
  EXPECT_EQ(e.rendezvous_port(), 29501);  // MASTER_PORT is torchrun's own store
  EXPECT_EQ(e.rendezvous_port(40000), 40000);
  EXPECT_NE(e.describe().find("rank 5 of 16"), std::string::npos);
}

TEST(LaunchEnv, TorchrunWinsOverSlurmJobVariables) {
  const LaunchEnv e = read_launch_env(env_of(
      {{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}}));
  EXPECT_EQ(e.launcher, "torchrun");
  EXPECT_EQ(e.rank, 1);
}

TEST(LaunchEnv, Slurm) {
  const LaunchEnv e = read_launch_env(env_of({{"SLURM_PROCID", "6"},
                                              {"SLURM_NTASKS", "8"},
                                              {"SLURM_LOCALID", "2"},
                                              {"SLURM_STEP_TASKS_PER_NODE", "4(x2)"},
                                              {"SLURM_STEP_NODELIST", "gpu[07-08]"}}));
  EXPECT_EQ(e.launcher, "slurm");
  EXPECT_EQ(e.rank, 6);
  EXPECT_EQ(e.world_size, 8);
  EXPECT_EQ(e.local_rank, 2);
  EXPECT_EQ(e.local_world_size, 4);
  EXPECT_EQ(e.master_addr, "gpu07");
  EXPECT_EQ(e.rendezvous_port(), 29501);
}

TEST(LaunchEnv, SlurmMasterAddrOverridesNodeList) {
  const LaunchEnv e = read_launch_env(env_of({{"SLURM_PROCID", "0"},
                                              {"SLURM_NTASKS", "2"},
                                              {"MASTER_ADDR", "10.0.0.5"},
                                              {"MASTER_PORT", "12000"},
                                              {"SLURM_JOB_NODELIST", "x[1-2]"}}));
  EXPECT_EQ(e.master_addr, "10.0.0.5");
  EXPECT_EQ(e.rendezvous_port(), 12001);
}

TEST(LaunchEnv, SlurmHostLists) {
  EXPECT_EQ(first_slurm_host("node3"), "node3");
  EXPECT_EQ(first_slurm_host("gpu[07-09,12],login1"), "gpu07");
  EXPECT_EQ(first_slurm_host("a[1-2]-ib,b"), "a1-ib");
  EXPECT_EQ(first_slurm_host("c,d[1-3]"), "c");
  EXPECT_EQ(first_slurm_host("r[003]"), "r003");
  test::expect_error([] { first_slurm_host("n[1-2"); }, {"unclosed"});
  test::expect_error([] { first_slurm_host("n1]"); }, {"without"});
  EXPECT_EQ(first_slurm_count("4(x2),3"), 4);
  EXPECT_EQ(first_slurm_count("8"), 8);
}

TEST(LaunchEnv, BadValuesNameTheVariable) {
  test::expect_error([] { read_launch_env(env_of({{"RANK", "x"}, {"WORLD_SIZE", "2"}})); }, {"RANK", "'x'"});
  test::expect_error(
      [] {
    read_launch_env(env_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}}));
      },
      {"RANK=2", "outside", "WORLD_SIZE=2"});
  test::expect_error([] { read_launch_env(env_of({{"RANK", "0"}})); }, {"WORLD_SIZE", "not set"});
  test::expect_error([] { read_launch_env(env_of({{"RANK", "1"}, {"WORLD_SIZE", "2"}})); }, {"MASTER_ADDR"});
  test::expect_error(
      [] {
    read_launch_env(env_of({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}}));
      },
      {"MASTER_ADDR", "SLURM_STEP_NODELIST"});
  test::expect_error(
      [] {
    read_launch_env(env_of({{"RANK", "0"},
                            {"WORLD_SIZE", "4"},
                            {"LOCAL_RANK", "3"},
                            {"LOCAL_WORLD_SIZE", "2"},
                            {"MASTER_ADDR", "a"}}));
      },
      {"LOCAL_RANK=3"});
}

TEST(Rendezvous, ParseFlag) {
  LaunchEnv e;
  e.world_size = 2;
  e.master_addr = "host0";
  e.master_port = 29500;
  RendezvousSpec s = parse_rendezvous("", e);
  EXPECT_EQ(s.kind, RendezvousSpec::Kind::Tcp);
  EXPECT_EQ(s.host, "host0");
  EXPECT_EQ(s.port, 29501);
  s = parse_rendezvous("tcp::4000", e);
  EXPECT_EQ(s.host, "host0");
  EXPECT_EQ(s.port, 4000);
  s = parse_rendezvous("tcp:10.1.2.3:4001", e);
  EXPECT_EQ(s.host, "10.1.2.3");
  EXPECT_EQ(s.port, 4001);
  s = parse_rendezvous("file:/shared/job.id", e);
  EXPECT_EQ(s.kind, RendezvousSpec::Kind::File);
  EXPECT_EQ(s.path, "/shared/job.id");
  test::expect_error([&] { parse_rendezvous("udp:1", e); }, {"--rendezvous", "udp:1"});
  test::expect_error([&] { parse_rendezvous("tcp::99999", e); }, {"99999"});
  test::expect_error([&] { parse_rendezvous("file:", e); }, {"path"});
}

// A port nothing listens on right now (bind to 0, read it back, close).
int free_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  EXPECT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

// Runs `fn` in a child process; the child's exit status is 0 when fn returns true, 1 when it
// returns false, 2 when it throws; the exception's message goes to `msg_file`.
pid_t spawn(const std::function<bool()>& fn, const std::string& msg_file) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 1;
    try {
      code = fn() ? 0 : 1;
    } catch (const std::exception& e) {
      std::ofstream(msg_file) << e.what();
      code = 2;
    }
    ::_exit(code);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

const std::vector<uint8_t> kBlob = [] {
  std::vector<uint8_t> b(128);
  for (size_t i = 0; i < b.size(); ++i) b[i] = uint8_t(i * 37 + 11);
  return b;
}();

RendezvousSpec tcp_spec(int port, double timeout_s) {
  RendezvousSpec s;
  s.kind = RendezvousSpec::Kind::Tcp;
  s.host = "127.0.0.1";
  s.port = port;
  s.timeout_s = timeout_s;
  s.job_tag = "test-job";
  return s;
}

// Four processes; the peers start before rank 0 and retry until it listens; one comes late.
TEST(Rendezvous, TcpFourProcessesWithLatePeer) {
  const int world = 4;
  const RendezvousSpec spec = tcp_spec(free_port(), 20);
  const std::string msg = test::temp_path("kat_rdv_msg");
  std::vector<pid_t> kids;
  for (int r = 1; r < world; ++r)
    kids.push_back(spawn(
        [&, r] {
      if (r == 3) std::this_thread::sleep_for(std::chrono::milliseconds(700));  // the late one
      return share_from_rank0(spec, r, world, {}) == kBlob;
        },
        msg + std::to_string(r)));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // peers are already retrying
  EXPECT_EQ(share_from_rank0(spec, 0, world, kBlob), kBlob);
  for (int r = 1; r < world; ++r) EXPECT_EQ(wait_exit(kids[size_t(r - 1)]), 0) << slurp(msg + std::to_string(r));
}

// Rank 2 never comes: rank 0 gives up after the timeout naming it, and the peer that did come
// exits with an error instead of hanging.
TEST(Rendezvous, TcpMissingPeerTimesOutNamingIt) {
  const int world = 3;
  const RendezvousSpec spec = tcp_spec(free_port(), 1.5);
  const std::string msg = test::temp_path("kat_rdv_missing");
  const pid_t peer = spawn([&] { return share_from_rank0(spec, 1, world, {}) == kBlob; }, msg);
  const auto t0 = std::chrono::steady_clock::now();
  test::expect_error([&] { share_from_rank0(spec, 0, world, kBlob); }, {"rank 2 of 3 never joined", "port"});
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
  EXPECT_EQ(wait_exit(peer), 2);
  EXPECT_NE(slurp(msg).find("got no id"), std::string::npos) << slurp(msg);
}

// No rank 0 at all: the peer retries, then names the address it could not reach.
TEST(Rendezvous, TcpNoRankZeroTimesOut) {
  const RendezvousSpec spec = tcp_spec(free_port(), 1.0);
  test::expect_error([&] { share_from_rank0(spec, 1, 2, {}); },
                     {"could not reach rank 0 at 127.0.0.1:", "MASTER_ADDR"});
}

// A peer launched with another world size is a configuration error, reported on both sides.
TEST(Rendezvous, TcpWorldSizeMismatchIsAnError) {
  const RendezvousSpec spec = tcp_spec(free_port(), 10);
  const std::string msg = test::temp_path("kat_rdv_world");
  const pid_t peer = spawn([&] { return !share_from_rank0(spec, 1, 3, {}).empty(); }, msg);
  test::expect_error([&] { share_from_rank0(spec, 0, 2, kBlob); }, {"world size 3 differs from rank 0's 2"});
  EXPECT_EQ(wait_exit(peer), 2);
  EXPECT_NE(slurp(msg).find("refused rank 1"), std::string::npos) << slurp(msg);
}

TEST(Rendezvous, SharedFile) {
  const int world = 3;
  RendezvousSpec spec;
  spec.kind = RendezvousSpec::Kind::File;
  spec.path = test::temp_path("kat_rdv_file");
  spec.timeout_s = 20;
  spec.job_tag = "job-a";
  std::filesystem::remove(spec.path);
  // A leftover file of another job must be ignored.
  {
    RendezvousSpec old = spec;
    old.job_tag = "job-old";
    EXPECT_EQ(share_from_rank0(old, 0, 1, {1, 2, 3}), (std::vector<uint8_t>{1, 2, 3}));  // world 1: no file
  }
  const std::string msg = test::temp_path("kat_rdv_filemsg");
  std::vector<pid_t> kids;
  for (int r = 1; r < world; ++r)
    kids.push_back(
        spawn([&, r] { return share_from_rank0(spec, r, world, {}) == kBlob; }, msg + std::to_string(r)));
  EXPECT_EQ(share_from_rank0(spec, 0, world, kBlob), kBlob);
  for (int r = 1; r < world; ++r) EXPECT_EQ(wait_exit(kids[size_t(r - 1)]), 0) << slurp(msg + std::to_string(r));
  EXPECT_FALSE(std::filesystem::exists(spec.path + ".rank1"));
  std::filesystem::remove(spec.path);
}

TEST(Rendezvous, SharedFileMissingPeerTimesOut) {
  RendezvousSpec spec;
  spec.kind = RendezvousSpec::Kind::File;
  spec.path = test::temp_path("kat_rdv_file_missing");
  spec.timeout_s = 0.5;
  std::filesystem::remove(spec.path);
  test::expect_error([&] { share_from_rank0(spec, 0, 3, kBlob); }, {"ranks 1, 2 of 3 never checked in"});
  test::expect_error([&] { share_from_rank0(spec, 1, 3, {}); }, {"rank 1 waited", "for rank 0 to write"});
  std::filesystem::remove(spec.path + ".rank1");
}

}  // namespace
}  // namespace kat::dist
