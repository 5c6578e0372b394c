// The syntax tree the parser builds and the interpreter walks. Names are interned to integer
// slots at parse time, filters and tests resolved to functions, so rendering never looks a
// string up in a table.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "jinja/value.h"

namespace plugformer::jinja {

struct Frame;

// Everything one render needs: the output, the current scope, the limits.
struct Interpreter {
  std::string* out = nullptr;
  std::shared_ptr<Frame> frame;
  size_t max_output_bytes = 0;
  size_t max_steps = 0;
  size_t steps = 0;
  size_t call_depth = 0;
  size_t max_call_depth = 0;
  std::string now;  // strftime_now's instant, "YYYY-MM-DDTHH:MM:SS" (empty: the clock)
  bool autoescape = false;  // inside {% autoescape true %}

  void write(std::string_view text);
  void step();  // one loop iteration or call: enforces max_steps
};

// Builtins, resolved by name at parse time.
using FilterFn = Value (*)(Interpreter&, const Value& input, CallArgs& args);
using TestFn = bool (*)(Interpreter&, const Value& input, CallArgs& args);
using GlobalFn = Value (*)(Interpreter&, CallArgs& args);
FilterFn find_filter(const std::string& name);
// Filters that can also append their text to an output instead of returning a new string
// ({{ x | tojson }} writes straight into the render's output); null for the others.
using FilterWriteFn = void (*)(Interpreter&, const Value& input, CallArgs& args, std::string& out);
FilterWriteFn find_filter_writer(const std::string& name);
TestFn find_test(const std::string& name);
GlobalFn find_global(const std::string& name);
// Which of str, list and dict have a method `name` (bits; 0 for most names). The parser finds it
// once for each x.name, so rendering does not look the name up.
uint8_t method_kinds(const std::string& name);
// x.name for a str, list or dict receiver: a bound method, an unsafe marker, or Undefined.
Value method_attribute(const Value& self, const std::string& name, uint8_t kinds);
// Calls x.name(args) without building a bound method; false when `name` is not a method of x.
bool call_method(Interpreter& interp, const Value& self, const std::string& name, uint8_t kinds, CallArgs& args,
                 Value& result);
// What `for` and filters iterate: a list's items, a dict's keys, a string's characters.
std::vector<Value> iterate(const Value& v);
// str % args (printf-style), str.format(*args, **kwargs).
std::string percent_format(const std::string& format, const Value& args);

// ---- Expressions ----
struct Expr {
  int line = 0;
  virtual ~Expr() = default;
  virtual Value eval(Interpreter& interp) const = 0;
  // The value itself, not a copy, when the expression names one that stays put while an
  // expression is evaluated (a constant; a variable in scope: only statements assign); else null.
  virtual const Value* peek(Interpreter&) const { return nullptr; }
  // bool(value): what if / elif / inline if / loop filters ask; comparisons, tests, and / or / not
  // answer without making a value.
  virtual bool test(Interpreter& interp) const { return eval(interp).truthy(); }
};
using ExprPtr = std::unique_ptr<Expr>;

// An operand's value: the one the expression names where it can (peek), else evaluated into
// `held` (constructed in place, not assigned).
struct Operand {
  const Value* named;
  Value held;
  Operand(const Expr& e, Interpreter& interp) : named(e.peek(interp)), held(named ? Value() : e.eval(interp)) {}
  const Value& get() const { return named ? *named : held; }
};

struct Arguments {
  std::vector<ExprPtr> positional;
  std::vector<std::pair<std::string, ExprPtr>> keyword;
  ExprPtr star, star_star;  // *args, **kwargs
  CallArgs eval(Interpreter& interp) const;
};

struct ConstExpr : Expr {
  Value value;
  // A string constant is held here and `value` borrows it (the tree outlives every render), so
  // evaluating one touches no reference count.
  std::string text;
  void set_string(std::string s) {
    text = std::move(s);
    value = Value::borrowed(&text);
  }
  Value eval(Interpreter&) const override { return value; }
  const Value* peek(Interpreter&) const override { return &value; }
};
struct NameExpr : Expr {
  std::string name;
  int slot = -1;
  GlobalFn global = nullptr;
  Value undefined;  // what the name is when nothing binds it (built once)
  Value eval(Interpreter& interp) const override;
  const Value* peek(Interpreter& interp) const override;
};
struct ListExpr : Expr {
  std::vector<ExprPtr> items;
  bool tuple = false;
  Value eval(Interpreter& interp) const override;
};
struct DictExpr : Expr {
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
  Value eval(Interpreter& interp) const override;
};
struct UnaryExpr : Expr {
  char op;  // '-', '+', '!'
  ExprPtr operand;
  Value eval(Interpreter& interp) const override;
  bool test(Interpreter& interp) const override;
};
enum class BinaryOp { Add, Sub, Mul, Div, FloorDiv, Mod, Pow, And, Or };
struct BinaryExpr : Expr {
  BinaryOp op;
  ExprPtr left, right;
  Value eval(Interpreter& interp) const override;
  bool test(Interpreter& interp) const override;
};
struct ConcatExpr : Expr {
  std::vector<ExprPtr> parts;
  Value eval(Interpreter& interp) const override;
};
enum class CompareOp { Eq, Ne, Lt, Le, Gt, Ge, In, NotIn };
struct CompareExpr : Expr {
  ExprPtr first;
  std::vector<std::pair<CompareOp, ExprPtr>> rest;
  Value eval(Interpreter& interp) const override { return Value(test(interp)); }
  bool test(Interpreter& interp) const override;
};
struct CondExpr : Expr {
  ExprPtr test, then, otherwise;  // otherwise may be null
  Value eval(Interpreter& interp) const override;
};
struct GetAttrExpr : Expr {
  ExprPtr object;
  std::string name;
  uint8_t methods = 0;  // method_kinds(name)
  Value eval(Interpreter& interp) const override;
  // A named dict's item (x.key where key is no method name): the dict's own value.
  const Value* peek(Interpreter& interp) const override;
};
struct GetItemExpr : Expr {
  ExprPtr object, key;
  Value eval(Interpreter& interp) const override;
  // A named dict's item or a named list's element, in place.
  const Value* peek(Interpreter& interp) const override;
};
struct SliceExpr : Expr {
  ExprPtr object, start, stop, step;
  Value eval(Interpreter& interp) const override;
};
struct CallExpr : Expr {
  ExprPtr callee;
  Arguments args;
  // The callee's shape, found once by the parser: x.name(...) or a global name(...).
  const GetAttrExpr* method = nullptr;
  const NameExpr* function = nullptr;
  Value eval(Interpreter& interp) const override;
};
struct FilterExpr : Expr {
  ExprPtr input;  // null inside a filter block / set block: the body's text is the input
  std::string name;
  FilterFn fn = nullptr;  // null: unknown filter in a conditional branch (fails when run)
  FilterWriteFn write = nullptr;
  Arguments args;
  Value eval(Interpreter& interp) const override;
  Value apply(Interpreter& interp, const Value& input) const;
};
struct TestExpr : Expr {
  ExprPtr input;
  std::string name;
  TestFn fn = nullptr;
  Arguments args;
  bool negated = false;
  Value eval(Interpreter& interp) const override { return Value(test(interp)); }
  bool test(Interpreter& interp) const override;
};

// ---- Statements ----
enum class Flow { Normal, Break, Continue };

struct Stmt {
  int line = 0;
  virtual ~Stmt() = default;
  virtual Flow render(Interpreter& interp) const = 0;
};
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;
Flow render_body(Interpreter& interp, const Body& body);

struct TextStmt : Stmt {
  std::string text;
  Flow render(Interpreter& interp) const override;
};
struct OutputStmt : Stmt {
  ExprPtr expr;
  // When expr is a + b + ... of at most kMaxSumTerms terms: the terms left to right, written
  // piece by piece when all are plain strings. Found once by the parser.
  static constexpr size_t kMaxSumTerms = 16;
  std::vector<const Expr*> sum_terms;
  const FilterExpr* written_filter = nullptr;  // expr is `x | f` of a filter with a writer

  Flow render(Interpreter& interp) const override;
};
struct IfStmt : Stmt {
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body otherwise;
  Flow render(Interpreter& interp) const override;
};

// What {% set %} / {% for %} / {% with %} assign to: a name, a namespace attribute, or a tuple.
struct Target {
  int slot = -1;
  std::string name;
  std::string attribute;  // ns.attribute
  int namespace_slot = -1;
  std::vector<Target> tuple;
  bool is_tuple = false;
};
void assign(Interpreter& interp, const Target& target, const Value& value);

struct ForStmt : Stmt {
  Target target;
  ExprPtr iterable, condition;
  Body body, otherwise;
  bool recursive = false;
  int loop_slot = -1;
  Flow render(Interpreter& interp) const override;
  void run(Interpreter& interp, const Value& iterable_value, size_t depth) const;
};
struct SetStmt : Stmt {
  Target target;
  ExprPtr value;
  Flow render(Interpreter& interp) const override;
};
struct SetBlockStmt : Stmt {
  Target target;
  Body body;
  std::vector<std::unique_ptr<FilterExpr>> filters;
  Flow render(Interpreter& interp) const override;
};
struct MacroStmt : Stmt {
  std::string name;
  int slot = -1;
  std::vector<std::pair<int, std::string>> params;  // slot, name
  std::vector<ExprPtr> defaults;                     // for the last defaults.size() params
  Body body;
  bool uses_varargs = false, uses_kwargs = false, uses_caller = false;
  int varargs_slot = -1, kwargs_slot = -1, caller_slot = -1;
  Flow render(Interpreter& interp) const override;
};
struct CallBlockStmt : Stmt {
  std::unique_ptr<CallExpr> call;
  std::unique_ptr<MacroStmt> caller;  // the block as a macro named "caller"
  Flow render(Interpreter& interp) const override;
};
struct FilterBlockStmt : Stmt {
  Body body;
  std::vector<std::unique_ptr<FilterExpr>> filters;
  Flow render(Interpreter& interp) const override;
};
struct WithStmt : Stmt {
  std::vector<std::pair<Target, ExprPtr>> assignments;
  Body body;
  Flow render(Interpreter& interp) const override;
};
struct LoopControlStmt : Stmt {
  Flow flow;
  Flow render(Interpreter&) const override { return flow; }
};
struct AutoescapeStmt : Stmt {  // {% autoescape expr %}...{% endautoescape %}
  ExprPtr enabled;
  Body body;
  Flow render(Interpreter& interp) const override;
};
struct BlockStmt : Stmt {  // {% generation %}, {% block %}: the body, rendered in place
  Body body;
  Flow render(Interpreter& interp) const override { return render_body(interp, body); }
};

// A parsed template.
struct Program {
  struct NameHash {  // names are looked up by string_view too (no string built per lookup)
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  Body body;
  std::unordered_map<std::string, int, NameHash, std::equal_to<>> slots;  // every name the template reads or writes
  int slot(const std::string& name) {
    auto [it, inserted] = slots.emplace(name, static_cast<int>(slots.size()));
    return it->second;
  }
};

struct SyntaxOptions {
  bool trim_blocks = true, lstrip_blocks = true, keep_trailing_newline = false;
  size_t max_nesting = 256;
};
// Throws TemplateSyntaxError (plugformer/error.h) naming line and column.
std::unique_ptr<Program> parse(std::string_view source, const SyntaxOptions& options);

}  // namespace plugformer::jinja
