#include "ops/attention_backend.h"

#include <atomic>
#include <cstdlib>

#include "kat/core/error.h"

namespace kat::ops {

namespace {
// -1: not set (KAT_ATTENTION / auto), else an AttentionBackend.
std::atomic<int> g_request{-1};
}  // namespace

const char* const kAttentionBackendHelp =
    "Attention kernels on the GPU: ours; cudnn (cuDNN's fused attention, the cudnn-frontend SDPA graphs; "
    "bf16 only, deterministic backward; ours wherever cuDNN cannot run, with a note saying why); or auto "
    "(cuDNN where it runs, ours elsewhere, quietly; 6-10 % faster steps on an H100). Default: the "
    "KAT_ATTENTION environment variable, else auto";

const char* attention_backend_name(AttentionBackend b) {
  return b == AttentionBackend::Cudnn ? "cudnn" : b == AttentionBackend::Auto ? "auto" : "ours";
}

AttentionBackend parse_attention_backend(const std::string& s, const std::string& where) {
  if (s == "ours") return AttentionBackend::Ours;
  if (s == "cudnn") return AttentionBackend::Cudnn;
  if (s == "auto") return AttentionBackend::Auto;
  throw Error(detail::concat(where, " '", s, "': expected ours, cudnn or auto"));
}

AttentionBackend requested_attention_backend() {
  const int r = g_request.load();
  if (r >= 0) return static_cast<AttentionBackend>(r);
  const char* e = std::getenv("KAT_ATTENTION");
  if (e && *e) return parse_attention_backend(e, "KAT_ATTENTION");
  return AttentionBackend::Auto;
}

void set_attention_backend(AttentionBackend b) { g_request.store(static_cast<int>(b)); }
void clear_attention_backend() { g_request.store(-1); }

}  // namespace kat::ops
