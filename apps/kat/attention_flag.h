// --attention: which implementation runs the attention op on the GPU (src/ops/attention_backend.h),
// the same flag on every command that has it (kat train, kat bench). Not given: KAT_ATTENTION, else
// auto. It is a process-wide request, not saved with a run: a resumed run takes it from its own
// command line, like --device.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "ops/attention_backend.h"

namespace kat::cli {

inline void add_attention_option(CLI::App* sub, std::string& value) {
  sub->add_option("--attention", value, ops::kAttentionBackendHelp)
      ->check(CLI::IsMember({"ours", "cudnn", "auto"}));
}

// Makes a given --attention the process's request (empty: not given).
inline void apply_attention_option(const std::string& value) {
  if (!value.empty()) ops::set_attention_backend(ops::parse_attention_backend(value, "--attention"));
}

}  // namespace kat::cli
