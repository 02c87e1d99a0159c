// Which implementation runs the CUDA attention op (ops/attention.h's contract): our kernels
// (ops/cuda/attention.h) or cuDNN's fused attention (ops/cuda/attention_cudnn.h, the cudnn-frontend
// SDPA graphs). One description of the choice, read by KatModelCuda::plan and set by the CLI's
// --attention (kat train, kat bench); the environment variable KAT_ATTENTION gives the default, so
// any binary (the GPU tests included) can be switched without a flag. The CPU has one attention op
// and ignores the choice.
// Asking for cuDNN is a request: where cuDNN cannot run (a build without it, a library older than
// it needs, fp32 storage, a shape it refuses) the model uses ours and says why in one line on stderr.
// The default, auto, takes cuDNN wherever it runs and ours elsewhere without a word: measured on
// one H100 (2026-12-07, bench/records/2026-12-07-s9-h100) cuDNN's attention made whole training
// steps 6-7.5 % and inference 8.7-9.6 % faster (kat_tiny b256/b1024, kat_small b256); its backward
// is deterministic (attention_cudnn.h).
#pragma once
#include <string>

namespace kat::ops {

enum class AttentionBackend { Ours, Cudnn, Auto };

// "ours" / "cudnn" / "auto".
const char* attention_backend_name(AttentionBackend b);
// "ours", "cudnn" or "auto"; anything else is a kat::Error naming `where` (the flag or variable).
AttentionBackend parse_attention_backend(const std::string& s, const std::string& where);
// The help text of --attention (one copy for every command that has it).
extern const char* const kAttentionBackendHelp;

// The requested implementation: set_attention_backend's, else KAT_ATTENTION's (read at each call),
// else auto.
AttentionBackend requested_attention_backend();
// Process-wide request (the CLI's --attention; tests). clear_attention_backend() returns to
// KAT_ATTENTION / auto.
void set_attention_backend(AttentionBackend b);
void clear_attention_backend();

}  // namespace kat::ops
