// `kat`: the command-line tool. Thin: parses flags (CLI11), calls the library, turns kat::Error
// into "error: ..." on stderr and exit code 1 (2 for bad flags).
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "commands.h"
#include "kat/core/error.h"

int main(int argc, char** argv) {
  // libgomp's idle threads spin for a long time before sleeping; on a 2-core machine with a data
  // loader thread that steals the core the loader needs (measured: 3-4x slower training steps).
  // The spin count is read when libgomp loads, so set it and re-execute once.
  if (!std::getenv("GOMP_SPINCOUNT") && !std::getenv("OMP_WAIT_POLICY")) {
    setenv("GOMP_SPINCOUNT", "10000", 1);
    execv("/proc/self/exe", argv);  // on failure just continue with the default
  }
  CLI::App app{
      "kat - the Kolmogorov-Arnold Transformer (KAT) engine: train, evaluate and run KAT and DeiT\n"
      "vision transformers on the CPU, with timm-compatible safetensors checkpoints.\n"
      "Run `kat train` with no arguments to train the default KAT on Fashion-MNIST."};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for all subcommands");
  kat::cli::register_all(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return kat::cli::run_selected(app);
  } catch (const kat::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
