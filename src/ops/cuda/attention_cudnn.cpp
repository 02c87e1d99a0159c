// cuDNN's fused attention behind ops/cuda/attention.h's contract (see attention_cudnn.h). Compiled in
// every CUDA build; with KAT_HAVE_CUDNN (cmake/cudnn.cmake) it builds cudnn-frontend graphs, without
// it every entry point says that this build has no cuDNN.
#include "ops/cuda/attention_cudnn.h"

#include <cstdio>
#include <mutex>
#include <set>
#include <string>

#include "kat/core/error.h"

namespace kat::cuda {

void cudnn_attention_note(const std::string& line) {
  static std::mutex mu;
  static std::set<std::string> seen;
  std::lock_guard<std::mutex> lock(mu);
  if (seen.insert(line).second) {
    std::fprintf(stderr, "%s\n", line.c_str());
    std::fflush(stderr);
  }
}

}  // namespace kat::cuda

#ifndef KAT_HAVE_CUDNN

namespace kat::cuda {

namespace {
const char* const kNoCudnn =
    "this build has no cuDNN (configure with cuDNN 9 and the cudnn-frontend headers found, e.g. "
    "-DKAT_CUDNN=ON with CUDNN_ROOT and CUDNN_FRONTEND_INCLUDE_DIR set: cmake/cudnn.cmake)";
bool refuse(std::string* why) {
  if (why) *why = kNoCudnn;
  return false;
}
}  // namespace

bool cudnn_attention_available(std::string* why) { return refuse(why); }
std::string cudnn_attention_version() { return kNoCudnn; }
bool cudnn_attention_supported(int64_t, int64_t, int64_t, int64_t, DType, bool, std::string* why) {
  return refuse(why);
}
std::size_t cudnn_attention_workspace_bytes(int64_t, int64_t, int64_t, int64_t, DType, bool) {
  throw Error(std::string("cudnn_attention_workspace_bytes: ") + kNoCudnn);
}
bool cudnn_attention_forward(const AttentionForwardArgs&, void*, std::size_t, cudaStream_t, std::string* why) {
  return refuse(why);
}
bool cudnn_attention_backward(const AttentionBackwardArgs&, std::size_t, cudaStream_t, std::string* why) {
  return refuse(why);
}

}  // namespace kat::cuda

#else  // KAT_HAVE_CUDNN

// No graph is serialised here: leave out the frontend's bundled nlohmann/json (the engine has its own).
#define CUDNN_FRONTEND_SKIP_JSON_LIB
#include <cuda_runtime.h>
#include <cudnn.h>
#include <cudnn_frontend.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "ops/cuda/cuda_check.h"

namespace kat::cuda {

namespace {
namespace fe = cudnn_frontend;

// The tensors' uids in the variant pack.
enum : int64_t { kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV };

// cuDNN 9 numbers its versions M * 10000 + m * 100 + p.
std::string version_text(std::size_t v) {
  return kat::detail::concat(v / 10000, ".", (v / 100) % 100, ".", v % 100);
}

// The loaded library (LD_LIBRARY_PATH may give an older cuDNN 9 than the headers built against).
bool library_ok(std::string* why) {
  const std::size_t v = cudnnGetVersion();
  if (v >= std::size_t(kCudnnMinVersion)) return true;
  if (why)
    *why = kat::detail::concat("the loaded cuDNN is ", version_text(v),
                               "; cuDNN attention needs >= ", version_text(kCudnnMinVersion),
                               " (put the directory of a newer libcudnn.so.9 first on LD_LIBRARY_PATH)");
  return false;
}

struct Key {
  int64_t B, N, H, hd;
  DType dtype;
  bool backward;
  bool operator<(const Key& o) const {
    return std::tie(B, N, H, hd, dtype, backward) < std::tie(o.B, o.N, o.H, o.hd, o.dtype, o.backward);
  }
};

struct GraphEntry {
  std::shared_ptr<fe::graph::Graph> graph;  // null: cuDNN refused, `error` says why
  std::string error;
  int64_t workspace = 0;  // bytes
};

// One per device: a handle, the graphs built on it, and the lock that serialises building and
// executing (cudnnSetStream + execute on the shared handle) between host threads.
struct Device {
  cudnnHandle_t handle = nullptr;
  std::string error;  // cudnnCreate failed
  std::mutex mu;
  std::map<Key, GraphEntry> graphs;
};

// The current device's state, or null with *why. Never freed: the handles and plans live as long as
// the process (destroying them at exit would race the CUDA runtime's own teardown).
Device* current_device(std::string* why) {
  static std::mutex mu;
  static auto* devices = new std::map<int, std::unique_ptr<Device> >();
  int dev = 0;
  const cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (why) *why = kat::detail::concat("no CUDA device (", cudaGetErrorString(e), ")");
    return nullptr;
  }
  std::lock_guard<std::mutex> lock(mu);
  std::unique_ptr<Device>& d = (*devices)[dev];
  if (!d) {
    d = std::make_unique<Device>();
    const cudnnStatus_t st = cudnnCreate(&d->handle);
    if (st != CUDNN_STATUS_SUCCESS) {
      d->handle = nullptr;
      d->error = kat::detail::concat("cudnnCreate on cuda:", dev, " failed: ", cudnnGetErrorString(st));
    }
  }
  if (!d->handle) {
    if (why) *why = d->error;
    return nullptr;
  }
  return d.get();
}

// The forward (training mode: O and the statistics) or backward SDPA graph of one problem, built
// for `handle`'s device. Strides: attention_cudnn.h.
GraphEntry build(cudnnHandle_t handle, const Key& k) {
  GraphEntry out;
  if (k.dtype != DType::BF16) {
    out.error = kat::detail::concat("cuDNN attention takes bf16 storage, this model stores ", dtype_name(k.dtype));
    return out;
  }
  const int64_t B = k.B, N = k.N, H = k.H, hd = k.hd, D = H * hd;
  const std::vector<int64_t> dim{B, H, N, hd}, qkv_stride{N * 3 * D, hd, 3 * D, 1}, out_stride{N * D, hd, D, 1};
  const std::vector<int64_t> stats_dim{B, H, N, 1}, stats_stride{H * N, N, 1, 1};
  const float scale = 1.0f / std::sqrt(float(hd));
  try {
    auto g = std::make_shared<fe::graph::Graph>();
    g->set_io_data_type(fe::DataType_t::BFLOAT16)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    auto bf16 = [&](const char* name, int64_t uid, const std::vector<int64_t>& stride) {
      return g->tensor(
          fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim(dim).set_stride(stride).set_data_type(
              fe::DataType_t::BFLOAT16));
    };
    auto q = bf16("q", kQ, qkv_stride), kk = bf16("k", kK, qkv_stride), v = bf16("v", kV, qkv_stride);
    if (!k.backward) {
      auto [o, stats] = g->sdpa(
          q, kk, v,
          fe::graph::SDPA_attributes().set_name("attention").set_generate_stats(true).set_attn_scale(scale));
      o->set_output(true).set_uid(kO).set_dim(dim).set_stride(out_stride).set_data_type(fe::DataType_t::BFLOAT16);
      stats->set_output(true)
          .set_uid(kStats)
          .set_dim(stats_dim)
          .set_stride(stats_stride)
          .set_data_type(fe::DataType_t::FLOAT);
    } else {
      auto o = bf16("out", kO, out_stride), dout = bf16("dout", kDO, out_stride);
      auto stats = g->tensor(fe::graph::Tensor_attributes()
                                 .set_name("lse")
                                 .set_uid(kStats)
                                 .set_dim(stats_dim)
                                 .set_stride(stats_stride)
                                 .set_data_type(fe::DataType_t::FLOAT));
      // Deterministic: see attention_cudnn.h (dS kept in the workspace, dQ by a GEMM, no atomics).
      auto [dq, dk, dv] = g->sdpa_backward(q, kk, v, o, dout, stats,
                                           fe::graph::SDPA_backward_attributes()
                                               .set_name("attention_backward")
                                               .set_attn_scale(scale)
                                               .set_deterministic_algorithm(true));
      const int64_t uids[3] = {kDQ, kDK, kDV};
      int i = 0;
      for (auto& t : {dq, dk, dv})
        t->set_output(true)
            .set_uid(uids[i++])
            .set_dim(dim)
            .set_stride(qkv_stride)
            .set_data_type(fe::DataType_t::BFLOAT16);
    }
    fe::error_t st = g->build(handle, {fe::HeurMode_t::A});
    if (st.is_bad()) {
      out.error =
          "cuDNN refused the " + std::string(k.backward ? "backward" : "forward") + " graph: " + st.get_message();
      return out;
    }
    int64_t ws = 0;
    st = g->get_workspace_size(ws);
    if (st.is_bad()) {
      out.error = "cuDNN could not size the workspace: " + st.get_message();
      return out;
    }
    out.graph = std::move(g);
    out.workspace = ws;
  } catch (const std::exception& e) {
    out.error = std::string("cuDNN graph: ") + e.what();
  }
  return out;
}

// The graph of k on device d (built on first use); d.mu held.
const GraphEntry& graph_of(Device& d, const Key& k) {
  auto it = d.graphs.find(k);
  if (it == d.graphs.end()) it = d.graphs.emplace(k, build(d.handle, k)).first;
  return it->second;
}

std::string problem_text(const Key& k) {
  return kat::detail::concat("(B ", k.B, ", N ", k.N, ", H ", k.H, ", hd ", k.hd, ", ", dtype_name(k.dtype), ")");
}

Key key_of(int64_t B, int64_t N, int64_t D, int64_t H, DType dtype, bool backward) {
  attention_check_shape(N, D, H);
  KAT_CHECK(B >= 0, "cuDNN attention: B must be >= 0, got ", B);
  return Key{B, N, H, D / H, dtype, backward};
}

bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

// Enqueues graph k of the current device with the variant pack `pack`. false + why when refused.
bool run(const Key& k, std::unordered_map<int64_t, void*>& pack, void* workspace, std::size_t workspace_bytes,
         cudaStream_t stream, std::string* why) {
  if (!library_ok(why)) return false;
  Device* d = current_device(why);
  if (!d) return false;
  std::lock_guard<std::mutex> lock(d->mu);
  const GraphEntry& g = graph_of(*d, k);
  if (!g.graph) {
    if (why) *why = g.error;
    return false;
  }
  if (std::size_t(g.workspace) > workspace_bytes || (g.workspace > 0 && !workspace)) {
    if (why)
      *why = kat::detail::concat("cuDNN needs ", g.workspace, " bytes of workspace for ", problem_text(k), ", ",
                                 workspace_bytes, " given");
    return false;
  }
  for (const auto& [uid, p] : pack)
    if (!aligned16(p)) {
      if (why) *why = "cuDNN attention needs 16-byte aligned tensors";
      return false;
    }
  const cudnnStatus_t s = cudnnSetStream(d->handle, stream);
  KAT_CHECK(s == CUDNN_STATUS_SUCCESS, "cudnnSetStream: ", cudnnGetErrorString(s));
  fe::error_t st = g.graph->execute(d->handle, pack, workspace);
  KAT_CHECK(st.is_good(), "cuDNN attention ", k.backward ? "backward" : "forward", " ", problem_text(k),
            " failed: ", st.get_message());
  return true;
}

}  // namespace

bool cudnn_attention_available(std::string* why) {
  if (!library_ok(why)) return false;
  return current_device(why) != nullptr;
}

std::string cudnn_attention_version() {
  const std::size_t rt = cudnnGetCudartVersion();
  return kat::detail::concat("cuDNN ", version_text(cudnnGetVersion()), " (for CUDA ", rt / 1000, ".",
                             (rt % 1000) / 10, ") with headers ", version_text(CUDNN_VERSION), ", cudnn-frontend ",
                             CUDNN_FRONTEND_MAJOR_VERSION, ".", CUDNN_FRONTEND_MINOR_VERSION, ".",
                             CUDNN_FRONTEND_PATCH_VERSION);
}

bool cudnn_attention_supported(int64_t B, int64_t N, int64_t D, int64_t H, DType dtype, bool backward,
                               std::string* why) {
  if (!library_ok(why)) return false;
  Device* d = current_device(why);
  if (!d) return false;
  std::lock_guard<std::mutex> lock(d->mu);
  for (bool bwd : {false, true}) {
    if (bwd && !backward) break;
    const Key k = key_of(B, N, D, H, dtype, bwd);
    if (B == 0) continue;  // nothing to run: a no-op either way
    const GraphEntry& g = graph_of(*d, k);
    if (!g.graph) {
      if (why) *why = g.error;
      return false;
    }
  }
  return true;
}

std::size_t cudnn_attention_workspace_bytes(int64_t B, int64_t N, int64_t D, int64_t H, DType dtype,
                                            bool backward) {
  std::string why;
  KAT_CHECK(cudnn_attention_supported(B, N, D, H, dtype, backward, &why),
            "cudnn_attention_workspace_bytes: ", why);
  if (B == 0) return 0;
  Device* d = current_device(&why);
  KAT_CHECK(d != nullptr, "cudnn_attention_workspace_bytes: ", why);
  std::lock_guard<std::mutex> lock(d->mu);
  int64_t ws = graph_of(*d, key_of(B, N, D, H, dtype, false)).workspace;
  if (backward) ws = std::max(ws, graph_of(*d, key_of(B, N, D, H, dtype, true)).workspace);
  return std::size_t(ws);
}

bool cudnn_attention_forward(const AttentionForwardArgs& a, void* workspace, std::size_t workspace_bytes,
                             cudaStream_t stream, std::string* why) {
  const Key k = key_of(a.B, a.N, a.D, a.H, a.dtype, false);
  if (a.B == 0) return true;
  KAT_CHECK(a.qkv && a.out && a.lse, "cudnn_attention_forward: null qkv, out or lse");
  const std::size_t es = dtype_size(a.dtype);
  char* qkv = static_cast<char*>(const_cast<void*>(a.qkv));
  std::unordered_map<int64_t, void*> pack{
      {kQ, qkv}, {kK, qkv + a.D * es}, {kV, qkv + 2 * a.D * es}, {kO, a.out}, {kStats, a.lse}};
  return run(k, pack, workspace, workspace_bytes, stream, why);
}

bool cudnn_attention_backward(const AttentionBackwardArgs& a, std::size_t workspace_bytes, cudaStream_t stream,
                              std::string* why) {
  const Key k = key_of(a.B, a.N, a.D, a.H, a.dtype, true);
  if (a.B == 0) return true;
  KAT_CHECK(a.qkv && a.out && a.lse && a.dout && a.dqkv,
            "cudnn_attention_backward: null qkv, out, lse, dout or dqkv");
  KAT_CHECK(a.dqkv != a.qkv && a.dqkv != a.out && a.dqkv != a.dout,
            "cudnn_attention_backward: dqkv must not alias qkv, out or dout");
  const std::size_t es = dtype_size(a.dtype);
  char* qkv = static_cast<char*>(const_cast<void*>(a.qkv));
  char* dqkv = static_cast<char*>(a.dqkv);
  std::unordered_map<int64_t, void*> pack{{kQ, qkv},
                                          {kK, qkv + a.D * es},
                                          {kV, qkv + 2 * a.D * es},
                                          {kO, const_cast<void*>(a.out)},
                                          {kStats, const_cast<float*>(a.lse)},
                                          {kDO, const_cast<void*>(a.dout)},
                                          {kDQ, dqkv},
                                          {kDK, dqkv + a.D * es},
                                          {kDV, dqkv + 2 * a.D * es}};
  return run(k, pack, a.workspace, workspace_bytes, stream, why);
}

}  // namespace kat::cuda

#endif  // KAT_HAVE_CUDNN
