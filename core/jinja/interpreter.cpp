// Evaluation of the syntax tree with Jinja2's runtime semantics (as compiled by jinja2's code
// generator and run by its runtime / sandbox): scopes, loops, macros, attribute and item lookup,
// Python's operators.
#include <array>
#include <cmath>
#include <limits>
#include <new>

#include "jinja/ast.h"
#include "jinja/frame.h"

namespace plugformer::jinja {

void Interpreter::write(std::string_view text) {
  if (out->size() + text.size() > max_output_bytes)
    fail("TemplateRuntimeError", "the template's output exceeds the limit of " + std::to_string(max_output_bytes) + " bytes");
  out->append(text);
}

void Interpreter::step() {
  if (++steps > max_steps)
    fail("TemplateRuntimeError", "the template ran more than " + std::to_string(max_steps) +
                                     " loop iterations and calls (the limit)");
}

namespace {

// Renders `body` into a string of its own (macros, set blocks, filter blocks).
template <typename F>
std::string capture(Interpreter& interp, F&& render) {
  std::string buffer;
  std::string* saved = interp.out;
  interp.out = &buffer;
  try {
    render();
  } catch (...) {
    interp.out = saved;
    throw;
  }
  interp.out = saved;
  return buffer;
}

// One more nested call (macro, recursive loop) for the guard's lifetime: a step, and a
// RecursionError past max_call_depth.
struct CallDepth {
  size_t& depth;
  CallDepth(Interpreter& interp, const char* what) : depth(interp.call_depth) {
    interp.step();
    if (depth + 1 > interp.max_call_depth)
      fail("RecursionError", "maximum recursion depth exceeded (" + std::to_string(interp.max_call_depth) + " " + what + ")");
    ++depth;
  }
  ~CallDepth() { --depth; }
};

// Enters a new scope for the lifetime of the guard.
struct ScopeGuard {
  Interpreter& interp;
  std::shared_ptr<Frame> saved;
  ScopeGuard(Interpreter& i, std::shared_ptr<Frame> parent) : interp(i), saved(i.frame) {
    interp.frame = std::make_shared<Frame>();
    interp.frame->parent = std::move(parent);
  }
  ~ScopeGuard() { interp.frame = std::move(saved); }
};

std::string object_description(const Value& v) {
  if (v.is_none()) return "None";
  return "'" + v.type_name() + " object'";
}

Value missing_attribute(const Value& object, const std::string& name) {
  return Value::undefined(object_description(object) + " has no attribute '" + name + "'");
}

// The scope a macro was defined in is held weakly: the scope holds the macro, and a strong
// reference back would keep both alive forever. A macro that outlives its scope (kept in a
// namespace after its loop ended) resolves names in the caller's outermost scope instead.
class MacroObject final : public Object {
 public:
  MacroObject(const MacroStmt* macro, const std::shared_ptr<Frame>& scope) : macro_(macro), scope_(scope) {}
  std::string type_name() const override { return "Macro"; }
  std::string repr() const override { return "<Macro '" + macro_->name + "'>"; }
  bool callable() const override { return true; }
  Value attribute(const std::string& name) const override {
    if (name == "name") return Value(macro_->name);
    if (name == "arguments") {
      std::vector<Value> names;
      for (const auto& [slot, param] : macro_->params) names.emplace_back(param);
      return make_list(std::move(names), List::Shape::Tuple);
    }
    if (name == "catch_kwargs") return Value(macro_->uses_kwargs);
    if (name == "catch_varargs") return Value(macro_->uses_varargs);
    if (name == "caller") return Value(macro_->uses_caller);
    return Value();
  }

  Value call(Interpreter& interp, CallArgs& args) override {
    CallDepth depth(interp, "nested macro calls");
    std::shared_ptr<Frame> parent = scope_.lock();
    if (!parent) {
      parent = interp.frame;
      while (parent->parent) parent = parent->parent;
    }
    ScopeGuard scope(interp, std::move(parent));
    Frame& frame = *interp.frame;
    const auto& params = macro_->params;
    const size_t first_default = params.size() - macro_->defaults.size();
    for (size_t i = 0; i < params.size(); ++i) {
      const auto& [slot, name] = params[i];
      Value value;
      bool given = false;
      if (i < args.positional.size()) {
        value = args.positional[i];
        given = true;
      }
      for (auto it = args.keyword.begin(); it != args.keyword.end(); ++it)
        if (it->first == name) {
          if (given) type_error("macro '" + macro_->name + "' got multiple values for argument '" + name + "'");
          value = std::move(it->second);
          args.keyword.erase(it);
          given = true;
          break;
        }
      if (!given) {
        value = i >= first_default ? macro_->defaults[i - first_default]->eval(interp)
                                   : Value::undefined("parameter '" + name + "' was not provided");
      }
      frame.set(slot, std::move(value));
    }
    if (macro_->uses_caller) {
      Value caller = Value::undefined("No caller defined");
      for (auto it = args.keyword.begin(); it != args.keyword.end(); ++it)
        if (it->first == "caller") {
          caller = std::move(it->second);
          args.keyword.erase(it);
          break;
        }
      frame.set(macro_->caller_slot, std::move(caller));
    }
    if (macro_->uses_kwargs) {
      auto kwargs = std::make_shared<Dict>();
      for (auto& [k, v] : args.keyword) kwargs->items.emplace_back(Value(k), std::move(v));
      frame.set(macro_->kwargs_slot, Value(std::move(kwargs)));
    } else if (!args.keyword.empty()) {
      type_error("macro '" + macro_->name + "' takes no keyword argument '" + args.keyword.front().first + "'");
    }
    if (macro_->uses_varargs) {
      std::vector<Value> extra;
      for (size_t i = params.size(); i < args.positional.size(); ++i) extra.push_back(args.positional[i]);
      frame.set(macro_->varargs_slot, make_list(std::move(extra), List::Shape::Tuple));
    } else if (args.positional.size() > params.size()) {
      type_error("macro '" + macro_->name + "' takes not more than " + std::to_string(params.size()) + " argument(s)");
    }
    return Value(capture(interp, [&] { render_body(interp, macro_->body); }));
  }

 private:
  const MacroStmt* macro_;
  std::weak_ptr<Frame> scope_;
};

class LoopObject final : public Object {
 public:
  LoopObject(const ForStmt* stmt, Value list, size_t depth)
      : stmt_(stmt), list_(std::move(list)), items_(&list_.list().items), depth_(depth) {}
  size_t index = 0;

  std::string type_name() const override { return "LoopContext"; }
  std::string repr() const override {
    return "<LoopContext " + std::to_string(index + 1) + "/" + std::to_string(items_->size()) + ">";
  }
  bool callable() const override { return stmt_->recursive; }
  Value attribute(const std::string& name) const override {
    const auto n = static_cast<int64_t>(items_->size()), i = static_cast<int64_t>(index);
    if (name == "index") return Value(i + 1);
    if (name == "index0") return Value(i);
    if (name == "revindex") return Value(n - i);
    if (name == "revindex0") return Value(n - i - 1);
    if (name == "first") return Value(i == 0);
    if (name == "last") return Value(i == n - 1);
    if (name == "length") return Value(n);
    if (name == "depth") return Value(static_cast<int64_t>(depth_ + 1));
    if (name == "depth0") return Value(static_cast<int64_t>(depth_));
    if (name == "previtem")
      return i > 0 ? (*items_)[index - 1] : Value::undefined("there is no previous item");
    if (name == "nextitem")
      return i + 1 < n ? (*items_)[index + 1] : Value::undefined("there is no next item");
    if (name == "cycle" || name == "changed")
      return Value(std::make_shared<LoopMethod>(std::static_pointer_cast<const LoopObject>(shared_from_this()), name));
    return Value::undefined("'LoopContext object' has no attribute '" + name + "'");
  }
  Value call(Interpreter& interp, CallArgs& args) override {
    if (!stmt_->recursive) return Object::call(interp, args);
    if (args.positional.size() != 1 || !args.keyword.empty()) type_error("loop() takes exactly one argument");
    CallDepth depth(interp, "nested recursive loop calls");
    return Value(capture(interp, [&] { stmt_->run(interp, args.positional[0], depth_ + 1); }));
  }

 private:
  class LoopMethod final : public Object {
   public:
    LoopMethod(std::shared_ptr<const LoopObject> loop, std::string name) : loop_(std::move(loop)), name_(std::move(name)) {}
    std::string type_name() const override { return "method"; }
    bool callable() const override { return true; }
    Value call(Interpreter&, CallArgs& args) override {
      if (name_ == "cycle") {
        if (args.positional.empty()) type_error("no items for cycling given");
        return args.positional[loop_->index % args.positional.size()];
      }
      // changed(*values): true when the values differ from the previous call's.
      Value now = make_list(args.positional, List::Shape::Tuple);
      bool changed = loop_->last_changed_.is_undefined() || !equals(loop_->last_changed_, now);
      loop_->last_changed_ = now;
      return Value(changed);
    }

   private:
    std::shared_ptr<const LoopObject> loop_;
    std::string name_;
  };

  const ForStmt* stmt_;
  Value list_;
  const std::vector<Value>* items_;
  size_t depth_;
  mutable Value last_changed_;
};

// The positions a slice takes: count of them, from start, step apart.
struct SliceRange {
  int64_t start = 0, step = 1;
  size_t count = 0;
  size_t operator[](size_t i) const { return static_cast<size_t>(start + static_cast<int64_t>(i) * step); }
};

// Python's sequence slicing (PySlice_AdjustIndices).
SliceRange slice_indices(int64_t length, const Value& start_v, const Value& stop_v, const Value& step_v) {
  auto index_of = [](const Value& v) -> std::optional<int64_t> {
    if (v.is_none() || v.is_undefined()) {
      if (v.is_undefined() && v.undefined_info()) type_error("slice indices must be integers or None or have an __index__ method");
      return std::nullopt;
    }
    if (v.is_int() || v.is_bool()) return v.as_int();
    type_error("slice indices must be integers or None or have an __index__ method");
  };
  std::optional<int64_t> start = index_of(start_v), stop = index_of(stop_v), step_o = index_of(step_v);
  int64_t step = step_o.value_or(1);
  if (step == 0) fail("ValueError", "slice step cannot be zero");
  int64_t lo, hi;
  if (step > 0) {
    lo = start ? (*start < 0 ? std::max<int64_t>(0, *start + length) : std::min(*start, length)) : 0;
    hi = stop ? (*stop < 0 ? std::max<int64_t>(0, *stop + length) : std::min(*stop, length)) : length;
  } else {
    lo = start ? (*start < 0 ? std::max<int64_t>(-1, *start + length) : std::min(*start, length - 1)) : length - 1;
    hi = stop ? (*stop < 0 ? std::max<int64_t>(-1, *stop + length) : std::min(*stop, length - 1)) : -1;
  }
  SliceRange range{lo, step, 0};
  if (step > 0 && hi > lo) range.count = static_cast<size_t>((hi - lo - 1) / step + 1);
  if (step < 0 && lo > hi)  // |step| in unsigned arithmetic: -step overflows for the most negative step
    range.count = static_cast<size_t>(static_cast<uint64_t>(lo - hi - 1) / (0 - static_cast<uint64_t>(step)) + 1);
  return range;
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::String:
      if (item.is_undefined()) item.fail_undefined();
      if (!item.is_string())
        type_error("'in <string>' requires string as left operand, not " + item.type_name());
      return container.str().find(item.str()) != std::string::npos;
    case Value::Kind::List:
      for (const auto& v : container.list().items)
        if (equals(v, item)) return true;
      return false;
    case Value::Kind::Dict: return container.dict().find(item) != nullptr;
    case Value::Kind::Undefined: {
      const UndefinedInfo* info = container.undefined_info();
      if (info && info->unsafe) container.fail_undefined();
      return false;
    }
    default: type_error("argument of type '" + container.type_name() + "' is not iterable");
  }
}

// Python's ints are unbounded; this engine's are 64-bit and says so instead of wrapping.
template <typename Op>
int64_t checked(Op op, int64_t a, int64_t b) {
  int64_t r;
  if (op(a, b, &r)) fail("OverflowError", "integer result too large for this engine (64-bit integers)");
  return r;
}
constexpr auto add_overflow = [](int64_t a, int64_t b, int64_t* r) { return __builtin_add_overflow(a, b, r); };
constexpr auto sub_overflow = [](int64_t a, int64_t b, int64_t* r) { return __builtin_sub_overflow(a, b, r); };
constexpr auto mul_overflow = [](int64_t a, int64_t b, int64_t* r) { return __builtin_mul_overflow(a, b, r); };

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// str, list and tuple support `* n`; Python's range objects and generators do not.
bool repeatable(const Value& v) {
  return v.is_string() || (v.is_list() && !v.is_generator() && v.list().shape != List::Shape::Range);
}

Value repeat(const Value& seq, int64_t times, Interpreter& interp) {
  const size_t unit = seq.is_string() ? seq.str().size() : seq.list().items.size() * sizeof(Value);
  if (times <= 0 || unit == 0)  // an empty result, at once however large `times` is
    return seq.is_string() ? (seq.is_markup() ? Value::markup("") : Value("")) : make_list({}, seq.list().shape);
  if (static_cast<uint64_t>(times) > interp.max_output_bytes / unit)
    fail("MemoryError", "repetition result larger than the output limit");
  if (seq.is_string()) {
    std::string out;
    out.reserve(unit * static_cast<size_t>(times));
    for (int64_t i = 0; i < times; ++i) out += seq.str();
    return seq.is_markup() ? Value::markup(std::move(out)) : Value(std::move(out));
  }
  std::vector<Value> out;
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), seq.list().items.begin(), seq.list().items.end());
  return make_list(std::move(out), seq.list().shape);
}

[[noreturn]] void unsupported(const char* op, const Value& a, const Value& b) {
  type_error(std::string("unsupported operand type(s) for ") + op + ": '" + a.type_name() + "' and '" + b.type_name() + "'");
}

Value arithmetic(BinaryOp op, const Value& a, const Value& b, Interpreter& interp) {
  if (a.is_undefined()) a.fail_undefined();
  if (b.is_undefined()) b.fail_undefined();
  const bool numbers = a.is_number() && b.is_number();
  const bool floats = numbers && (a.is_float() || b.is_float());
  switch (op) {
    case BinaryOp::Add:
      if (floats) return Value(a.as_float() + b.as_float());
      if (numbers) return Value(checked(add_overflow, a.as_int(), b.as_int()));
      if (a.is_string() && b.is_string()) {
        if (a.str().size() + b.str().size() > interp.max_output_bytes)
          fail("MemoryError", "string concatenation larger than the output limit");
        if (a.is_markup() == b.is_markup()) return a.is_markup() ? Value::markup(a.str() + b.str()) : Value(a.str() + b.str());
        return Value::markup((a.is_markup() ? a.str() : html_escape(a.str())) + (b.is_markup() ? b.str() : html_escape(b.str())));
      }
      if (a.is_list() && b.is_list() && a.list().shape == b.list().shape && !a.is_generator()) {
        if ((a.list().items.size() + b.list().items.size()) * sizeof(Value) > interp.max_output_bytes)
          fail("MemoryError", "list concatenation larger than the output limit");
        std::vector<Value> items = a.list().items;
        items.insert(items.end(), b.list().items.begin(), b.list().items.end());
        return make_list(std::move(items), a.list().shape);
      }
      if (a.is_string() || b.is_string())
        type_error(a.is_string() ? "can only concatenate str (not \"" + b.type_name() + "\") to str"
                                 : "unsupported operand type(s) for +: '" + a.type_name() + "' and 'str'");
      unsupported("+", a, b);
    case BinaryOp::Sub:
      if (floats) return Value(a.as_float() - b.as_float());
      if (numbers) return Value(checked(sub_overflow, a.as_int(), b.as_int()));
      unsupported("-", a, b);
    case BinaryOp::Mul:
      if (floats) return Value(a.as_float() * b.as_float());
      if (numbers) return Value(checked(mul_overflow, a.as_int(), b.as_int()));
      if (repeatable(a) && (b.is_int() || b.is_bool())) return repeat(a, b.as_int(), interp);
      if (repeatable(b) && (a.is_int() || a.is_bool())) return repeat(b, a.as_int(), interp);
      type_error("can't multiply sequence by non-int of type '" + b.type_name() + "'");
    case BinaryOp::Div:
      if (!numbers) unsupported("/", a, b);
      if (b.as_float() == 0.0) fail("ZeroDivisionError", "division by zero");
      return Value(a.as_float() / b.as_float());
    case BinaryOp::FloorDiv:
      if (!numbers) unsupported("//", a, b);
      if (floats) {
        if (b.as_float() == 0.0) fail("ZeroDivisionError", "float floor division by zero");
        return Value(std::floor(a.as_float() / b.as_float()));
      }
      if (b.as_int() == 0) fail("ZeroDivisionError", "integer division or modulo by zero");
      return Value(floor_div(a.as_int(), b.as_int()));
    case BinaryOp::Mod:
      if (a.is_string()) return Value(percent_format(a.str(), b));
      if (!numbers) unsupported("%", a, b);
      if (floats) {
        double x = a.as_float(), y = b.as_float();
        if (y == 0.0) fail("ZeroDivisionError", "float modulo");
        double m = std::fmod(x, y);
        if (m != 0.0 && ((m < 0) != (y < 0))) m += y;
        return Value(m);
      }
      if (b.as_int() == 0) fail("ZeroDivisionError", "integer division or modulo by zero");
      return Value(a.as_int() - floor_div(a.as_int(), b.as_int()) * b.as_int());
    case BinaryOp::Pow: {
      if (!numbers) unsupported("** or pow()", a, b);
      if (floats || b.as_int() < 0) {
        if (a.as_float() == 0.0 && b.as_float() < 0) fail("ZeroDivisionError", "0.0 cannot be raised to a negative power");
        return Value(std::pow(a.as_float(), b.as_float()));
      }
      int64_t base = a.as_int(), exp = b.as_int(), result = 1;
      while (exp > 0) {
        if (exp & 1) result = checked(mul_overflow, result, base);
        exp >>= 1;
        if (exp) base = checked(mul_overflow, base, base);
      }
      return Value(result);
    }
    default: break;
  }
  return Value();
}

}  // namespace

// ---- attribute and item lookup (the sandbox's getattr / getitem) ----

Value get_attribute(const Value& object, const std::string& name, uint8_t methods) {
  if (object.is_undefined()) object.fail_undefined();
  // Python attributes starting with "_" are the sandbox's to refuse; every object has the
  // dunder ones. A dict's own keys may start with "_" (only found attributes are checked).
  if (name.size() > 4 && name.compare(0, 2, "__") == 0 && name.compare(name.size() - 2, 2, "__") == 0)
    return Value::undefined("access to attribute '" + name + "' of '" + object.type_name() + "' object is unsafe.", true);
  if (!name.empty() && name[0] == '_' && !object.is_dict()) return missing_attribute(object, name);
  switch (object.kind()) {
    case Value::Kind::Int:
    case Value::Kind::Bool:
    case Value::Kind::Float:
      if (name == "real") return object.is_float() ? object : Value(object.as_int());
      if (name == "imag") return object.is_float() ? Value(0.0) : Value(int64_t{0});
      if (!object.is_float() && name == "numerator") return Value(object.as_int());
      if (!object.is_float() && name == "denominator") return Value(int64_t{1});
      return missing_attribute(object, name);
    case Value::Kind::String:
    case Value::Kind::List: {
      if (object.is_list() && object.list().group) {  // groupby's named tuple
        if (name == "grouper") return object.list().items[0];
        if (name == "list") return object.list().items[1];
      }
      Value m = method_attribute(object, name, methods);
      return m.is_undefined() && !m.undefined_info() ? missing_attribute(object, name) : m;
    }
    case Value::Kind::Dict: {
      Value m = method_attribute(object, name, methods);
      if (!m.is_undefined() || m.undefined_info()) return m;
      if (const Value* v = object.dict().find(std::string_view(name))) return *v;
      return missing_attribute(object, name);
    }
    case Value::Kind::Object: {
      Value v = object.object().attribute(name);
      return v.is_undefined() && !v.undefined_info() ? missing_attribute(object, name) : v;
    }
    default: return missing_attribute(object, name);
  }
}

Value get_item(const Value& object, const Value& key) {
  if (object.is_undefined()) object.fail_undefined();
  auto as_attribute = [&]() -> Value {
    if (key.is_string()) return get_attribute(object, key.str());
    return Value::undefined(object_description(object) + " has no element " + key.repr());
  };
  switch (object.kind()) {
    case Value::Kind::Dict:
      if (const Value* v = object.dict().find(key)) return *v;
      return as_attribute();
    case Value::Kind::List:
    case Value::Kind::String: {
      if (!(key.is_int() || key.is_bool()) || object.is_generator()) return as_attribute();
      int64_t n = object.is_string() ? static_cast<int64_t>(code_point_count(object.str()))
                                     : static_cast<int64_t>(object.list().items.size());
      int64_t i = key.as_int();
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value::undefined(object_description(object) + " has no element " + key.repr());
      if (object.is_list()) return object.list().items[static_cast<size_t>(i)];
      std::u32string cps = to_code_points(object.str());
      return Value(from_code_points(std::u32string_view(&cps[static_cast<size_t>(i)], 1)));
    }
    default: return as_attribute();
  }
}

Value call_value(Interpreter& interp, const Value& callee, CallArgs& args) {
  if (callee.is_undefined()) callee.fail_undefined();
  if (callee.is_object() && callee.object().callable()) return callee.object().call(interp, args);
  type_error("'" + callee.type_name() + "' object is not callable");
}

CallArgs Arguments::eval(Interpreter& interp) const {
  CallArgs a;
  a.positional.reserve(positional.size());
  for (const auto& e : positional) a.positional.push_back(e->eval(interp));
  if (star) {
    Value extra = star->eval(interp);
    for (auto& v : iterate(extra)) a.positional.push_back(std::move(v));
  }
  for (const auto& [k, e] : keyword) a.keyword.emplace_back(k, e->eval(interp));
  if (star_star) {
    Value extra = star_star->eval(interp);
    if (!extra.is_dict()) type_error("argument after ** must be a mapping, not " + extra.type_name());
    for (const auto& [k, v] : extra.dict().items) {
      if (!k.is_string()) type_error("keywords must be strings");
      a.keyword.emplace_back(k.str(), v);
    }
  }
  return a;
}

// ---- expressions ----

const Value* NameExpr::peek(Interpreter& interp) const { return interp.frame->lookup(slot); }

Value NameExpr::eval(Interpreter& interp) const {
  if (const Value* v = interp.frame->lookup(slot)) return *v;
  if (global) return Value(std::make_shared<GlobalFunction>(name, global));
  return undefined;
}

Value ListExpr::eval(Interpreter& interp) const {
  std::vector<Value> values;
  values.reserve(items.size());
  for (const auto& e : items) values.push_back(e->eval(interp));
  return make_list(std::move(values), tuple ? List::Shape::Tuple : List::Shape::List);
}

Value DictExpr::eval(Interpreter& interp) const {
  auto d = std::make_shared<Dict>();
  for (const auto& [k, v] : items) {
    Value key = k->eval(interp);
    if (key.is_list() && !key.is_tuple()) type_error("unhashable type: 'list'");
    if (key.is_dict()) type_error("unhashable type: 'dict'");
    if (key.is_undefined()) key.fail_undefined();
    d->set(std::move(key), v->eval(interp));
  }
  return Value(std::move(d));
}

bool UnaryExpr::test(Interpreter& interp) const { return op == '!' ? !operand->test(interp) : eval(interp).truthy(); }

Value UnaryExpr::eval(Interpreter& interp) const {
  if (op == '!') return Value(!operand->test(interp));
  Value v = operand->eval(interp);
  if (v.is_undefined()) v.fail_undefined();
  if (!v.is_number()) type_error(std::string("bad operand type for unary ") + op + ": '" + v.type_name() + "'");
  if (op == '+') return v.is_bool() ? Value(v.as_int()) : v;
  if (v.is_float()) return Value(-v.as_float());
  if (v.as_int() == std::numeric_limits<int64_t>::min()) fail("OverflowError", "integer result too large");
  return Value(-v.as_int());
}

bool BinaryExpr::test(Interpreter& interp) const {
  if (op == BinaryOp::And) return left->test(interp) && right->test(interp);
  if (op == BinaryOp::Or) return left->test(interp) || right->test(interp);
  return eval(interp).truthy();
}

Value BinaryExpr::eval(Interpreter& interp) const {
  if (op == BinaryOp::And) {
    Value l = left->eval(interp);
    return l.truthy() ? right->eval(interp) : l;
  }
  if (op == BinaryOp::Or) {
    Value l = left->eval(interp);
    return l.truthy() ? l : right->eval(interp);
  }
  Value l = left->eval(interp);
  Value r = right->eval(interp);
  // a + b + c on strings: a temporary nobody else holds grows in place (no quadratic copies).
  if (op == BinaryOp::Add && l.is_string() && r.is_string() && l.is_markup() == r.is_markup())
    if (std::string* s = l.unique_str(); s && s->size() + r.str().size() <= interp.max_output_bytes) {
      s->append(r.str());
      return l;
    }
  return arithmetic(op, l, r, interp);
}

Value ConcatExpr::eval(Interpreter& interp) const {
  std::string s;
  for (const auto& p : parts) p->eval(interp).append_str(s);
  return Value(std::move(s));
}

namespace {
bool holds(CompareOp op, const Value& left, const Value& right) {
  switch (op) {
    case CompareOp::Eq: return equals(left, right);
    case CompareOp::Ne: return !equals(left, right);
    case CompareOp::Lt: return compare(left, right) < 0;
    case CompareOp::Le: return compare(left, right) <= 0;
    case CompareOp::Gt: return compare(left, right) > 0;
    case CompareOp::Ge: return compare(left, right) >= 0;
    case CompareOp::In: return contains(right, left);
    case CompareOp::NotIn: return !contains(right, left);
  }
  return false;
}
}  // namespace

bool CompareExpr::test(Interpreter& interp) const {
  if (rest.size() == 1) {  // a == b, the usual case
    const Operand left(*first, interp);
    return holds(rest[0].first, left.get(), Operand(*rest[0].second, interp).get());
  }
  // a < b < c: each operand is kept until the next comparison is done, in turns.
  std::optional<Operand> operands[2];
  operands[0].emplace(*first, interp);
  size_t next = 1;
  for (const auto& [op, expr] : rest) {
    const Value& left = operands[next ^ 1]->get();
    if (!holds(op, left, operands[next].emplace(*expr, interp).get())) return false;
    next ^= 1;
  }
  return true;
}

Value CondExpr::eval(Interpreter& interp) const {
  if (test->test(interp)) return then->eval(interp);
  if (otherwise) return otherwise->eval(interp);
  return Value::undefined("the inline if-expression on line " + std::to_string(line) +
                          " evaluated to false and no else section was defined.");
}

Value GetAttrExpr::eval(Interpreter& interp) const {
  return get_attribute(Operand(*object, interp).get(), name, methods);
}

const Value* GetAttrExpr::peek(Interpreter& interp) const {
  // Methods and names starting with "_" (the sandbox's) take the general path.
  if (methods != 0 || name.empty() || name[0] == '_') return nullptr;
  const Value* o = object->peek(interp);
  return o && o->is_dict() ? o->dict().find(std::string_view(name)) : nullptr;
}

const Value* GetItemExpr::peek(Interpreter& interp) const {
  const Value* o = object->peek(interp);
  if (!o || !(o->is_dict() || (o->is_list() && !o->is_generator()))) return nullptr;
  const Value* k = key->peek(interp);
  if (!k) return nullptr;
  if (o->is_dict()) return o->dict().find(*k);
  if (!(k->is_int() || k->is_bool())) return nullptr;
  const auto& items = o->list().items;
  int64_t i = k->as_int();
  if (i < 0) i += static_cast<int64_t>(items.size());
  return i >= 0 && i < static_cast<int64_t>(items.size()) ? &items[static_cast<size_t>(i)] : nullptr;
}

Value GetItemExpr::eval(Interpreter& interp) const {
  const Operand o(*object, interp);
  return get_item(o.get(), Operand(*key, interp).get());
}

Value SliceExpr::eval(Interpreter& interp) const {
  if (!object) {  // a slice among several subscripts (x[1:2, 3]): Python's slice object, a key no sequence takes
    return make_list({start ? start->eval(interp) : Value::none(), stop ? stop->eval(interp) : Value::none(),
                      step ? step->eval(interp) : Value::none()},
                     List::Shape::Tuple);
  }
  Value o = object->eval(interp);
  if (o.is_undefined()) o.fail_undefined();
  Value a = start ? start->eval(interp) : Value::none();
  Value b = stop ? stop->eval(interp) : Value::none();
  Value c = step ? step->eval(interp) : Value::none();
  if (o.is_string()) {
    std::u32string cps = to_code_points(o.str());
    std::u32string out;
    const SliceRange range = slice_indices(static_cast<int64_t>(cps.size()), a, b, c);
    out.reserve(range.count);
    for (size_t i = 0; i < range.count; ++i) out.push_back(cps[range[i]]);
    return Value(from_code_points(out));
  }
  if (o.is_list() && !o.is_generator()) {
    const auto& items = o.list().items;
    std::vector<Value> out;
    const SliceRange range = slice_indices(static_cast<int64_t>(items.size()), a, b, c);
    out.reserve(range.count);
    for (size_t i = 0; i < range.count; ++i) out.push_back(items[range[i]]);
    return make_list(std::move(out), o.list().shape);
  }
  return Value::undefined(object_description(o) + " has no element slice");
}

Value CallExpr::eval(Interpreter& interp) const {
  // x.method(...) on a str / list / dict calls the method without building a bound method.
  if (const GetAttrExpr* attr = method) {
    Value self = attr->object->eval(interp);
    if ((self.is_string() || self.is_list() || self.is_dict()) && !attr->name.empty() && attr->name[0] != '_') {
      CallArgs a = args.eval(interp);
      Value result;
      if (call_method(interp, self, attr->name, attr->methods, a, result)) return result;
    }
    Value fn = get_attribute(self, attr->name, attr->methods);
    CallArgs a = args.eval(interp);
    return call_value(interp, fn, a);
  }
  if (const NameExpr* name = function; name && name->global) {
    if (!interp.frame->lookup(name->slot)) {
      CallArgs a = args.eval(interp);
      return name->global(interp, a);
    }
  }
  Value fn = callee->eval(interp);
  CallArgs a = args.eval(interp);
  return call_value(interp, fn, a);
}

Value FilterExpr::apply(Interpreter& interp, const Value& value) const {
  if (!fn) fail("TemplateRuntimeError", "No filter named '" + name + "' found.");
  CallArgs a = args.eval(interp);
  return fn(interp, value, a);
}

Value FilterExpr::eval(Interpreter& interp) const {
  return apply(interp, Operand(*input, interp).get());
}

bool TestExpr::test(Interpreter& interp) const {
  const Operand v(*input, interp);
  if (!fn) fail("TemplateRuntimeError", "No test named '" + name + "' found.");
  CallArgs a = args.eval(interp);
  return fn(interp, v.get(), a) != negated;
}

// ---- statements ----

Flow render_body(Interpreter& interp, const Body& body) {
  for (const auto& s : body) {
    Flow f = s->render(interp);
    if (f != Flow::Normal) return f;
  }
  return Flow::Normal;
}

Flow TextStmt::render(Interpreter& interp) const {
  interp.write(text);
  return Flow::Normal;
}

namespace {
// {{ a + b + c }} of strings (how templates build their lines): the pieces go straight to the
// output instead of into a new string. Anything else is summed as usual.
void write_sum(Interpreter& interp, const std::vector<const Expr*>& terms) {
  // The terms' values: in place where a term names one (peek), else held here (only as many
  // as needed: an output line runs this often).
  struct Held {
    alignas(Value) unsigned char bytes[OutputStmt::kMaxSumTerms * sizeof(Value)];
    size_t count = 0;
    // Evaluates `e` straight into the next slot (no temporary to move from).
    Value* add(const Expr& e, Interpreter& interp) {
      Value* slot = new (bytes + count * sizeof(Value)) Value(e.eval(interp));
      ++count;
      return slot;
    }
    ~Held() {
      for (size_t i = 0; i < count; ++i) reinterpret_cast<Value*>(bytes)[i].~Value();
    }
  } held;
  std::array<const Value*, OutputStmt::kMaxSumTerms> values;
  bool plain = true;
  for (size_t i = 0; i < terms.size(); ++i) {
    const Value* v = terms[i]->peek(interp);
    values[i] = v ? v : held.add(*terms[i], interp);
    plain = plain && values[i]->is_string() && !values[i]->is_markup();
  }
  if (plain) {
    for (size_t i = 0; i < terms.size(); ++i) interp.write(values[i]->str());
    return;
  }
  Value sum = *values[0];
  for (size_t i = 1; i < terms.size(); ++i) sum = arithmetic(BinaryOp::Add, sum, *values[i], interp);
  std::string text;
  sum.append_str(text);
  interp.write(text);
}
}  // namespace

Flow OutputStmt::render(Interpreter& interp) const {
  if (interp.autoescape) {  // {% autoescape true %}: what is not Markup is escaped
    Value v = expr->eval(interp);
    interp.write(v.is_markup() ? v.str() : html_escape(v.to_str()));
    return Flow::Normal;
  }
  if (!sum_terms.empty()) {
    write_sum(interp, sum_terms);
    return Flow::Normal;
  }
  if (written_filter) {
    const Operand input(*written_filter->input, interp);
    CallArgs a = written_filter->args.eval(interp);
    written_filter->write(interp, input.get(), a, *interp.out);
    interp.write({});  // the output limit
    return Flow::Normal;
  }
  Value v = expr->eval(interp);
  if (v.is_string()) {
    interp.write(v.str());
  } else {
    std::string s;
    v.append_str(s);
    interp.write(s);
  }
  return Flow::Normal;
}

Flow IfStmt::render(Interpreter& interp) const {
  for (const auto& [test, body] : branches)
    if (test->test(interp)) return render_body(interp, body);
  return render_body(interp, otherwise);
}

void assign(Interpreter& interp, const Target& target, const Value& value) {
  if (target.is_tuple) {
    std::vector<Value> items = iterate(value);
    if (items.size() != target.tuple.size())
      fail("ValueError", items.size() < target.tuple.size()
                             ? "not enough values to unpack (expected " + std::to_string(target.tuple.size()) + ", got " +
                                   std::to_string(items.size()) + ")"
                             : "too many values to unpack (expected " + std::to_string(target.tuple.size()) + ")");
    for (size_t i = 0; i < items.size(); ++i) assign(interp, target.tuple[i], items[i]);
    return;
  }
  if (!target.attribute.empty()) {
    const Value* ns = interp.frame->lookup(target.namespace_slot);
    if (!ns || !ns->is_object() || !ns->object().set_attribute(target.attribute, value))
      fail("TemplateRuntimeError", "cannot assign attribute on non-namespace object");
    return;
  }
  interp.frame->set(target.slot, value);
}

Flow ForStmt::render(Interpreter& interp) const {
  run(interp, iterable->eval(interp), 0);
  return Flow::Normal;
}

void ForStmt::run(Interpreter& interp, const Value& iterable_value, size_t depth) const {
  ScopeGuard scope(interp, interp.frame);
  // The loop walks a list (a list value is walked in place: lists are immutable). The loop
  // object holds it, so `loop` stays valid even if the template keeps it.
  Value list = iterable_value.is_list() && !iterable_value.is_generator() ? iterable_value : make_list(iterate(iterable_value));
  if (condition) {
    std::vector<Value> kept;
    for (const auto& item : list.list().items) {
      interp.step();
      assign(interp, target, item);
      if (condition->test(interp)) kept.push_back(item);
    }
    list = make_list(std::move(kept));
  }
  const std::vector<Value>& items = list.list().items;
  if (items.empty()) {
    render_body(interp, otherwise);
    return;
  }
  auto loop = std::make_shared<LoopObject>(this, list, depth);
  for (size_t i = 0; i < items.size(); ++i) {
    interp.step();
    // Each iteration starts from the enclosing scope's values: a {% set %} in the body does not
    // carry over to the next iteration (jinja2's loop scoping).
    if (i > 0) interp.frame->vars.clear();
    interp.frame->set(loop_slot, Value(loop));
    loop->index = i;
    assign(interp, target, items[i]);
    if (render_body(interp, body) == Flow::Break) break;
  }
}

Flow SetStmt::render(Interpreter& interp) const {
  assign(interp, target, value->eval(interp));
  return Flow::Normal;
}

namespace {
Value apply_chain(Interpreter& interp, const std::vector<std::unique_ptr<FilterExpr>>& filters, Value v) {
  for (const auto& f : filters) v = f->apply(interp, v);
  return v;
}
}  // namespace

Flow SetBlockStmt::render(Interpreter& interp) const {
  std::string text = capture(interp, [&] {
    ScopeGuard scope(interp, interp.frame);
    render_body(interp, body);
  });
  assign(interp, target, apply_chain(interp, filters, Value(std::move(text))));
  return Flow::Normal;
}

Flow MacroStmt::render(Interpreter& interp) const {
  interp.frame->set(slot, Value(std::make_shared<MacroObject>(this, interp.frame)));
  return Flow::Normal;
}

Flow CallBlockStmt::render(Interpreter& interp) const {
  Value caller_value(std::make_shared<MacroObject>(caller.get(), interp.frame));
  Value fn = call->callee->eval(interp);
  CallArgs a = call->args.eval(interp);
  a.keyword.emplace_back("caller", std::move(caller_value));
  Value result = call_value(interp, fn, a);
  std::string s;
  result.append_str(s);
  interp.write(s);
  return Flow::Normal;
}

Flow FilterBlockStmt::render(Interpreter& interp) const {
  std::string text = capture(interp, [&] {
    ScopeGuard scope(interp, interp.frame);
    render_body(interp, body);
  });
  Value v = apply_chain(interp, filters, Value(std::move(text)));
  std::string s;
  v.append_str(s);
  interp.write(s);
  return Flow::Normal;
}

Flow WithStmt::render(Interpreter& interp) const {
  std::vector<Value> values;
  for (const auto& [target, expr] : assignments) values.push_back(expr->eval(interp));
  ScopeGuard scope(interp, interp.frame);
  for (size_t i = 0; i < assignments.size(); ++i) assign(interp, assignments[i].first, values[i]);
  return render_body(interp, body);
}

}  // namespace plugformer::jinja

namespace plugformer::jinja {

Flow AutoescapeStmt::render(Interpreter& interp) const {
  const bool saved = interp.autoescape;
  interp.autoescape = enabled->eval(interp).truthy();
  Flow flow;
  try {
    flow = render_body(interp, body);
  } catch (...) {
    interp.autoescape = saved;
    throw;
  }
  interp.autoescape = saved;
  return flow;
}

}  // namespace plugformer::jinja
