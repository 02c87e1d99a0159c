#include "kat/model/params.h"

#include "kat/core/error.h"

namespace kat {

int64_t ParamTable::add(const std::string& name, std::vector<int64_t> shape, ParamKind kind) {
  KAT_ASSERT(!index_.count(name));
  ParamSpec s;
  s.name = name;
  s.shape = std::move(shape);
  s.numel = 1;
  for (auto d : s.shape) s.numel *= d;
  s.offset = total_;
  s.kind = kind;
  total_ += s.numel;
  index_[name] = specs_.size();
  specs_.push_back(std::move(s));
  return specs_.back().offset;
}

const ParamSpec* ParamTable::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &specs_[it->second];
}

const ParamSpec& ParamTable::at(const std::string& name) const {
  const ParamSpec* s = find(name);
  KAT_CHECK(s, "no parameter named '", name, "' in this model");
  return *s;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

}  // namespace kat
