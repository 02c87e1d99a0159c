#include "dist/rendezvous.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "kat/core/error.h"

namespace kat::dist {

namespace {

using Clock = std::chrono::steady_clock;
constexpr uint32_t kMagic = 0x5254414b;  // "KATR"
constexpr uint32_t kVersion = 1;
constexpr uint32_t kMaxBlob = 1 << 20;  // the blob is an NCCL id (128 bytes); anything near 1 MiB is garbage

Clock::time_point deadline_after(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

double seconds_left(Clock::time_point deadline) {
  return std::chrono::duration<double>(deadline - Clock::now()).count();
}

// An fd closed on scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd, o.fd);
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

// Wait until fd is readable (or writable); false on timeout.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const double left = seconds_left(deadline);
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, int(std::min(left * 1000.0 + 1, 1e9)));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

// Reads exactly n bytes before the deadline. Returns "" on success, else what went wrong.
std::string read_exact(int fd, void* buf, size_t n, Clock::time_point deadline) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    if (!wait_fd(fd, POLLIN, deadline)) return "timed out";
    const ssize_t r = ::recv(fd, p, n, 0);
    if (r == 0) return "connection closed by the other side";
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return std::strerror(errno);
    }
    p += r;
    n -= size_t(r);
  }
  return "";
}

std::string write_all(int fd, const void* buf, size_t n, Clock::time_point deadline) {
  const auto* p = static_cast<const uint8_t*>(buf);
  while (n > 0) {
    if (!wait_fd(fd, POLLOUT, deadline)) return "timed out";
    const ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return std::strerror(errno);
    }
    p += r;
    n -= size_t(r);
  }
  return "";
}

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(uint8_t(v >> (8 * i)));
}
uint32_t get_u32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

// Hello (peer -> rank 0): magic, version, world size, rank, tag length, tag.
std::vector<uint8_t> hello(int world, int rank, const std::string& tag) {
  std::vector<uint8_t> m;
  put_u32(m, kMagic);
  put_u32(m, kVersion);
  put_u32(m, uint32_t(world));
  put_u32(m, uint32_t(rank));
  put_u32(m, uint32_t(tag.size()));
  m.insert(m.end(), tag.begin(), tag.end());
  return m;
}

// Reply (rank 0 -> peer): status (0 = ok), length, then the blob (ok) or a message (refused).
std::vector<uint8_t> reply(uint32_t status, const std::vector<uint8_t>& body) {
  std::vector<uint8_t> m;
  put_u32(m, status);
  put_u32(m, uint32_t(body.size()));
  m.insert(m.end(), body.begin(), body.end());
  return m;
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string s;
  const size_t shown = std::min<size_t>(ranks.size(), 16);
  for (size_t i = 0; i < shown; ++i) s += (i ? ", " : "") + std::to_string(ranks[i]);
  if (ranks.size() > shown) s += detail::concat(" and ", ranks.size() - shown, " more");
  return s;
}

std::vector<uint8_t> tcp_rank0(const RendezvousSpec& spec, int world, const std::vector<uint8_t>& blob) {
  Fd ls(::socket(AF_INET6, SOCK_STREAM, 0));
  bool v6 = ls.fd >= 0;
  if (!v6) ls = Fd(::socket(AF_INET, SOCK_STREAM, 0));
  KAT_CHECK(ls.fd >= 0, "rendezvous: cannot create a socket: ", std::strerror(errno));
  int one = 1, zero = 0;
  ::setsockopt(ls.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  int rc;
  if (v6) {
    ::setsockopt(ls.fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);  // IPv4 peers too
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_any;
    a.sin6_port = htons(uint16_t(spec.port));
    rc = ::bind(ls.fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  } else {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons(uint16_t(spec.port));
    rc = ::bind(ls.fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  }
  KAT_CHECK(rc == 0, "rendezvous: rank 0 cannot listen on port ", spec.port, ": ", std::strerror(errno),
            " (another job on this port? choose one with --rendezvous tcp::PORT)");
  KAT_CHECK(::listen(ls.fd, std::max(world, 16)) == 0, "rendezvous: listen on port ", spec.port, ": ",
            std::strerror(errno));

  const auto deadline = deadline_after(spec.timeout_s);
  std::vector<Fd> peers(static_cast<size_t>(world));  // by rank; peers[0] unused
  int joined = 1;
  while (joined < world) {
    if (!wait_fd(ls.fd, POLLIN, deadline)) {
      std::vector<int> missing;
      for (int r = 1; r < world; ++r)
        if (peers[size_t(r)].fd < 0) missing.push_back(r);
      throw Error(
          detail::concat("rendezvous: rank", missing.size() > 1 ? "s " : " ", rank_list(missing), " of ", world,
                         " never joined rank 0 on port ", spec.port, " within ", spec.timeout_s,
                         " s (did they start? can they reach this host? check MASTER_ADDR and the firewall)"));
    }
    Fd c(::accept(ls.fd, nullptr, nullptr));
    if (c.fd < 0) continue;
    // A peer has at most 10 s (or what is left) to say who it is; a stray connection is dropped.
    const auto hello_deadline = std::min(deadline, Clock::now() + std::chrono::seconds(10));
    uint8_t head[20];
    if (!read_exact(c.fd, head, sizeof head, hello_deadline).empty() || get_u32(head) != kMagic) continue;
    const uint32_t version = get_u32(head + 4), pworld = get_u32(head + 8), prank = get_u32(head + 12),
                   tag_len = get_u32(head + 16);
    std::string tag(std::min<uint32_t>(tag_len, 4096), '\0');
    if (tag_len > 4096 || !read_exact(c.fd, tag.data(), tag.size(), hello_deadline).empty()) continue;
    std::string problem;
    if (version != kVersion)
      problem = detail::concat("protocol version ", version, ", rank 0 speaks ", kVersion, " (mixed kat builds?)");
    else if (tag != spec.job_tag)
      problem = detail::concat("job tag '", tag, "' differs from rank 0's '", spec.job_tag,
                               "' (another job on this port?)");
    else if (int(pworld) != world)
      problem = detail::concat("world size ", pworld, " differs from rank 0's ", world);
    else if (prank == 0 || prank >= uint32_t(world))
      problem = detail::concat("rank ", prank, " is not a peer rank of a job of ", world);
    else if (peers[prank].fd >= 0)
      problem = detail::concat("rank ", prank, " joined twice");
    if (!problem.empty()) {
      const std::vector<uint8_t> refusal = reply(1, std::vector<uint8_t>(problem.begin(), problem.end()));
      (void)write_all(c.fd, refusal.data(), refusal.size(), hello_deadline);
      // A different job or world size is a configuration error of this job too: say so here.
      if (tag == spec.job_tag && version == kVersion)
        throw Error("rendezvous: a process claiming rank " + std::to_string(prank) + " was refused: " + problem);
      continue;
    }
    peers[prank] = std::move(c);
    ++joined;
  }
  const std::vector<uint8_t> ok = reply(0, blob);
  for (int r = 1; r < world; ++r) {
    const std::string err = write_all(peers[size_t(r)].fd, ok.data(), ok.size(), deadline);
    KAT_CHECK(err.empty(), "rendezvous: sending the id to rank ", r, " failed: ", err, " (did it exit?)");
  }
  return blob;
}

std::vector<uint8_t> tcp_peer(const RendezvousSpec& spec, int rank, int world) {
  const auto deadline = deadline_after(spec.timeout_s);
  const std::string where = detail::concat(spec.host, ":", spec.port);
  std::string last_error = "no attempt";
  for (int attempt = 0;; ++attempt) {
    if (attempt > 0) {
      if (seconds_left(deadline) <= 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(50 * attempt, 500)));
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const std::string port = std::to_string(spec.port);
    const int g = ::getaddrinfo(spec.host.c_str(), port.c_str(), &hints, &res);
    if (g != 0) {
      last_error = detail::concat("cannot resolve '", spec.host, "': ", gai_strerror(g));
      if (seconds_left(deadline) <= 0) break;
      continue;
    }
    Fd c;
    for (addrinfo* a = res; a; a = a->ai_next) {
      Fd s(::socket(a->ai_family, a->ai_socktype, a->ai_protocol));
      if (s.fd < 0) continue;
      if (::connect(s.fd, a->ai_addr, a->ai_addrlen) == 0) {
        c = std::move(s);
        break;
      }
      last_error = std::strerror(errno);
    }
    ::freeaddrinfo(res);
    if (c.fd < 0) continue;  // rank 0 not listening yet: retry until the deadline
    const std::vector<uint8_t> h = hello(world, rank, spec.job_tag);
    std::string err = write_all(c.fd, h.data(), h.size(), deadline);
    uint8_t head[8];
    if (err.empty()) err = read_exact(c.fd, head, sizeof head, deadline);
    if (!err.empty()) {
      // Rank 0 closing on us before replying means it gave up (a rank missing) or died.
      throw Error(detail::concat("rendezvous: rank ", rank, " joined rank 0 at ", where, " but got no id: ", err,
                                 " (rank 0 gave up waiting for another rank, or exited)"));
    }
    const uint32_t status = get_u32(head), len = get_u32(head + 4);
    KAT_CHECK(len <= kMaxBlob, "rendezvous: rank 0 at ", where, " sent a reply of ", len,
              " bytes (not a kat rendezvous?)");
    std::vector<uint8_t> body(len);
    err = read_exact(c.fd, body.data(), len, deadline);
    KAT_CHECK(err.empty(), "rendezvous: reading the id from rank 0 at ", where, ": ", err);
    KAT_CHECK(status == 0, "rendezvous: rank 0 at ", where, " refused rank ", rank, ": ",
              std::string(body.begin(), body.end()));
    return body;
  }
  throw Error(detail::concat("rendezvous: rank ", rank, " could not reach rank 0 at ", where, " within ",
                             spec.timeout_s, " s (", last_error,
                             "; is rank 0 running, and is MASTER_ADDR right?)"));
}

// File format: magic, tag length, tag, blob length, blob.
std::vector<uint8_t> file_rank0(const RendezvousSpec& spec, int world, const std::vector<uint8_t>& blob) {
  namespace fs = std::filesystem;
  const auto deadline = deadline_after(spec.timeout_s);
  std::vector<int> missing;
  for (;;) {
    missing.clear();
    for (int r = 1; r < world; ++r)
      if (!fs::exists(spec.path + ".rank" + std::to_string(r))) missing.push_back(r);
    if (missing.empty()) break;
    KAT_CHECK(seconds_left(deadline) > 0, "rendezvous: rank", missing.size() > 1 ? "s " : " ", rank_list(missing),
              " of ", world, " never checked in at ", spec.path, ".rank<N> within ", spec.timeout_s,
              " s (did they start? do all nodes see this filesystem?)");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::vector<uint8_t> f;
  put_u32(f, kMagic);
  put_u32(f, uint32_t(spec.job_tag.size()));
  f.insert(f.end(), spec.job_tag.begin(), spec.job_tag.end());
  put_u32(f, uint32_t(blob.size()));
  f.insert(f.end(), blob.begin(), blob.end());
  const std::string tmp = spec.path + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream o(tmp, std::ios::binary | std::ios::trunc);
    o.write(reinterpret_cast<const char*>(f.data()), std::streamsize(f.size()));
    o.close();
    KAT_CHECK(o.good(), "rendezvous: cannot write ", tmp);
  }
  std::error_code ec;
  fs::rename(tmp, spec.path, ec);
  KAT_CHECK(!ec, "rendezvous: cannot rename ", tmp, " to ", spec.path, ": ", ec.message());
  for (int r = 1; r < world; ++r) fs::remove(spec.path + ".rank" + std::to_string(r), ec);
  return blob;
}

std::vector<uint8_t> file_peer(const RendezvousSpec& spec, int rank) {
  namespace fs = std::filesystem;
  const auto deadline = deadline_after(spec.timeout_s);
  {
    const std::string mine = spec.path + ".rank" + std::to_string(rank);
    std::ofstream o(mine, std::ios::trunc);
    o << ::getpid() << "\n";
    KAT_CHECK(o.good(), "rendezvous: rank ", rank, " cannot create ", mine,
              " (is the directory shared and writable?)");
  }
  for (;;) {
    std::ifstream in(spec.path, std::ios::binary);
    if (in) {
      std::vector<uint8_t> f((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (f.size() >= 12 && get_u32(f.data()) == kMagic) {
        const uint32_t tl = get_u32(f.data() + 4);
        if (f.size() >= 12 + size_t(tl)) {
          const std::string tag(f.begin() + 8, f.begin() + 8 + tl);
          const uint32_t bl = get_u32(f.data() + 8 + tl);
          if (tag == spec.job_tag && f.size() == 12 + size_t(tl) + bl)
            return std::vector<uint8_t>(f.begin() + 12 + tl, f.end());
        }
      }
    }
    KAT_CHECK(seconds_left(deadline) > 0, "rendezvous: rank ", rank, " waited ", spec.timeout_s,
              " s for rank 0 to write ", spec.path, " (is rank 0 running? does it see the same filesystem?)");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace

RendezvousSpec parse_rendezvous(const std::string& flag, const LaunchEnv& env, double timeout_s) {
  RendezvousSpec s;
  s.timeout_s = timeout_s;
  if (flag.rfind("file:", 0) == 0) {
    s.kind = RendezvousSpec::Kind::File;
    s.path = flag.substr(5);
    KAT_CHECK(!s.path.empty(), "--rendezvous file:PATH needs a path");
    return s;
  }
  KAT_CHECK(flag.empty() || flag == "tcp" || flag.rfind("tcp:", 0) == 0, "--rendezvous '", flag,
            "': expected tcp, tcp:HOST:PORT, tcp::PORT or file:PATH");
  s.kind = RendezvousSpec::Kind::Tcp;
  s.host = env.master_addr;
  int port = 0;
  if (flag.size() > 4) {
    const std::string rest = flag.substr(4);
    const size_t colon = rest.rfind(':');
    KAT_CHECK(colon != std::string::npos, "--rendezvous '", flag, "': expected tcp:HOST:PORT or tcp::PORT");
    if (colon > 0) s.host = rest.substr(0, colon);
    const std::string p = rest.substr(colon + 1);
    char* end = nullptr;
    const long v = std::strtol(p.c_str(), &end, 10);
    KAT_CHECK(!p.empty() && *end == '\0' && v > 0 && v < 65536, "--rendezvous '", flag, "': port '", p,
              "' is not a number in 1..65535");
    port = int(v);
  }
  s.port = env.rendezvous_port(port);
  KAT_CHECK(s.port > 0 && s.port < 65536, "rendezvous port ", s.port,
            " (MASTER_PORT + 1) is out of range; set one with --rendezvous tcp::PORT");
  KAT_CHECK(!s.host.empty() || !env.distributed(),
            "--rendezvous: rank 0's host is unknown (set MASTER_ADDR or use tcp:HOST:PORT)");
  return s;
}

std::vector<uint8_t> share_from_rank0(const RendezvousSpec& spec, int rank, int world_size,
                                      const std::vector<uint8_t>& blob) {
  KAT_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "rendezvous: rank ", rank, " is outside a job of ",
            world_size);
  KAT_CHECK(blob.size() <= kMaxBlob, "rendezvous: blob of ", blob.size(), " bytes is too large");
  if (world_size == 1) return blob;
  if (spec.kind == RendezvousSpec::Kind::File)
    return rank == 0 ? file_rank0(spec, world_size, blob) : file_peer(spec, rank);
  return rank == 0 ? tcp_rank0(spec, world_size, blob) : tcp_peer(spec, rank, world_size);
}

}  // namespace kat::dist
