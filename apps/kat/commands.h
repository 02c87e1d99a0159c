// Subcommands of the `kat` CLI; each lives in its own cmd_*.cpp.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <vector>

namespace kat::cli {

// Each command registers its subcommand and a runner; run_selected calls the parsed one.
struct Command {
  CLI::App* app;
  std::function<int()> run;
};
std::vector<Command>& registry();
void register_all(CLI::App& app);
int run_selected(CLI::App& app);

void register_infer(CLI::App& app);
void register_info(CLI::App& app);
void register_train(CLI::App& app);
void register_eval(CLI::App& app);
void register_predict(CLI::App& app);
void register_plot(CLI::App& app);
void register_bench(CLI::App& app);

}  // namespace kat::cli
