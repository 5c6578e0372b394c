// Scopes and the lookups the interpreter and the builtins share.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "jinja/ast.h"

namespace plugformer::jinja {

// One scope: the template's top level, a loop, a macro call, a with block. Variables are slots.
struct Frame {
  std::shared_ptr<Frame> parent;
  std::vector<std::pair<int, Value>> vars;

  const Value* lookup(int slot) const {
    for (const Frame* f = this; f; f = f->parent.get())
      for (const auto& [s, v] : f->vars)
        if (s == slot) return &v;
    return nullptr;
  }
  void set(int slot, Value value) {
    for (auto& [s, v] : vars)
      if (s == slot) { v = std::move(value); return; }
    vars.emplace_back(slot, std::move(value));
  }
};

// A global function (range, namespace, raise_exception, ...) used as a value.
class GlobalFunction final : public Object {
 public:
  GlobalFunction(std::string name, GlobalFn fn) : name_(std::move(name)), fn_(fn) {}
  std::string type_name() const override { return "builtin_function_or_method"; }
  std::string repr() const override { return "<built-in function " + name_ + ">"; }
  bool callable() const override { return true; }
  Value call(Interpreter& interp, CallArgs& args) override { return fn_(interp, args); }

 private:
  std::string name_;
  GlobalFn fn_;
};

// The sandbox's getattr (x.name) and getitem (x[key]), and calling a value.
// `methods` is method_kinds(name), when the caller knows it.
Value get_attribute(const Value& object, const std::string& name, uint8_t methods);
inline Value get_attribute(const Value& object, const std::string& name) {
  return get_attribute(object, name, method_kinds(name));
}
Value get_item(const Value& object, const Value& key);
Value call_value(Interpreter& interp, const Value& callee, CallArgs& args);

}  // namespace plugformer::jinja
