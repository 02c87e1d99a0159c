#include "commands.h"

namespace kat::cli {

std::vector<Command>& registry() {
  static std::vector<Command> r;
  return r;
}

void register_all(CLI::App& app) {
  register_train(app);
  register_eval(app);
  register_predict(app);
  register_infer(app);
  register_plot(app);
  register_bench(app);
  register_info(app);
}

int run_selected(CLI::App& app) {
  for (auto& c : registry())
    if (c.app->parsed()) return c.run();
  return 2;
}

}  // namespace kat::cli
