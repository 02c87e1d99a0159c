// Temporary registrations, replaced as each command lands.
#include "commands.h"
namespace kat::cli {
void register_train(CLI::App&) {}
void register_eval(CLI::App&) {}
void register_predict(CLI::App&) {}
void register_plot(CLI::App&) {}
void register_bench(CLI::App&) {}
}  // namespace kat::cli
