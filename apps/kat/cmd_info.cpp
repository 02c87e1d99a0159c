// kat info: list built-in models, or show one model's parameter table.
#include <cstdio>
#include <memory>

#include "commands.h"
#include "kat/model/kat_model.h"

namespace kat::cli {

void register_info(CLI::App& app) {
  auto* sub = app.add_subcommand("info", "List built-in models, or show a model's config and parameters");
  auto model = std::make_shared<std::string>();
  auto verbose = std::make_shared<bool>(false);
  sub->add_option("--model,-m", *model, "Model name or config path (omit to list built-in models)");
  sub->add_flag("--params,-p", *verbose, "Print every parameter with its shape");
  registry().push_back({sub,
                        [model, verbose] {
    if (model->empty()) {
      std::printf("%-26s %6s %5s %5s %5s %12s\n", "model", "img", "D", "depth", "ffn", "params");
      for (const auto& n : builtin_config_names()) {
        const ModelConfig c = ModelConfig::load(n);
        std::printf("%-26s %6d %5d %5d %5s %12lld\n", n.c_str(), c.img_size, c.embed_dim, c.depth, c.ffn.c_str(),
                    (long long)KatModel(c).num_params());
      }
      return 0;
    }
    const ModelConfig c = ModelConfig::load(*model);
    KatModel m(c);
    std::printf("%s\nparameters: %lld\n", c.to_json().c_str(), (long long)m.num_params());
    if (*verbose)
      for (const auto& s : m.table().specs())
        std::printf("  %-45s %-18s %lld\n", s.name.c_str(), shape_str(s.shape).c_str(), (long long)s.numel);
    return 0;
                        }});
}

}  // namespace kat::cli
