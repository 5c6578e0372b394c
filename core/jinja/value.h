// The values templates compute with, with Python's semantics (what Jinja2 inherits): ints and
// floats, immutable strings, lists / tuples, insertion-ordered dicts, None, Jinja's Undefined,
// and objects (namespace, loop, macros, bound methods). Values are cheap to copy: everything
// bigger than a number is shared and never mutated once built (the sandbox is immutable), except
// a namespace's attributes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <memory_resource>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace plugformer::jinja {

class Value;
struct Interpreter;

// A failure while rendering, named by the Python exception Jinja2 would raise
// ("UndefinedError", "TypeError", "SecurityError", ...). raise_exception's kind is "TemplateError".
struct RenderError {
  std::string kind;
  std::string message;
};
[[noreturn]] void fail(std::string kind, std::string message);
[[noreturn]] inline void type_error(std::string message) { fail("TypeError", std::move(message)); }

struct List;
struct Dict;
class Object;

// What an Undefined remembers: the name or attribute that was missing (for its error message),
// and whether it stands for an attribute the sandbox refused (using it is then a SecurityError).
struct UndefinedInfo {
  std::string message;
  bool unsafe = false;
};

class Value {
 public:
  enum class Kind : uint8_t { Undefined, None, Bool, Int, Float, String, List, Dict, Object };

  Value() = default;  // Undefined
  static Value none() { Value v; v.kind_ = Kind::None; return v; }
  static Value undefined(std::string message, bool unsafe = false);
  // markupsafe.Markup: a string marked safe (|safe, |escape). "+" with a plain string escapes the
  // plain one (what Markup.__add__ does, even with autoescape off).
  static Value markup(std::string s) { Value v(std::move(s)); v.markup_ = true; return v; }
  Value(bool b) : kind_(Kind::Bool) { scalar_.b = b; }
  Value(int v) : Value(static_cast<int64_t>(v)) {}
  Value(int64_t v) : kind_(Kind::Int) { scalar_.i = v; }
  Value(double v) : kind_(Kind::Float) { scalar_.f = v; }
  Value(std::string s);
  Value(std::string_view s) : Value(std::string(s)) {}
  Value(const char* s) : Value(std::string(s)) {}
  // A string owned by the caller's JSON for the length of a render: no copy.
  static Value borrowed(const std::string* s) { Value v; v.kind_ = Kind::String; v.scalar_.borrowed = s; return v; }
  Value(std::shared_ptr<List> l);
  Value(std::shared_ptr<Dict> d);
  Value(std::shared_ptr<Object> o);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::Undefined; }
  bool is_none() const { return kind_ == Kind::None; }
  bool is_bool() const { return kind_ == Kind::Bool; }
  bool is_int() const { return kind_ == Kind::Int; }  // Python's int, not bool
  bool is_float() const { return kind_ == Kind::Float; }
  bool is_number() const { return kind_ == Kind::Int || kind_ == Kind::Float || kind_ == Kind::Bool; }
  bool is_string() const { return kind_ == Kind::String; }
  bool is_markup() const { return markup_; }
  bool is_list() const { return kind_ == Kind::List; }  // list, tuple or generator
  bool is_dict() const { return kind_ == Kind::Dict; }
  bool is_object() const { return kind_ == Kind::Object; }

  bool as_bool() const { return scalar_.b; }
  int64_t as_int() const { return kind_ == Kind::Bool ? (scalar_.b ? 1 : 0) : scalar_.i; }
  double as_float() const { return kind_ == Kind::Float ? scalar_.f : static_cast<double>(as_int()); }
  const std::string& str() const { return ptr_ ? *static_cast<const std::string*>(ptr_.get()) : *scalar_.borrowed; }
  // For `a + b` on a string nobody else holds: appends in place instead of copying.
  std::string* unique_str() { return kind_ == Kind::String && ptr_ && ptr_.use_count() == 1 ? static_cast<std::string*>(ptr_.get()) : nullptr; }
  const List& list() const { return *static_cast<const List*>(ptr_.get()); }
  const Dict& dict() const { return *static_cast<const Dict*>(ptr_.get()); }
  Object& object() const { return *static_cast<Object*>(ptr_.get()); }
  std::shared_ptr<Object> object_ptr() const { return std::static_pointer_cast<Object>(ptr_); }
  const UndefinedInfo* undefined_info() const { return static_cast<const UndefinedInfo*>(ptr_.get()); }
  bool is_tuple() const;
  bool is_generator() const;

  // Python's bool(), str(), repr() and type(x).__name__.
  bool truthy() const;
  std::string to_str() const;
  void append_str(std::string& out) const;
  void append_repr(std::string& out) const;
  std::string repr() const { std::string s; append_repr(s); return s; }
  std::string type_name() const;

  // The error Jinja2 raises when an Undefined is used for more than printing or testing.
  [[noreturn]] void fail_undefined() const;

  // The containers of j are allocated from `memory` (a render's variables come from one arena,
  // freed at once when the render ends).
  static Value from_json(const nlohmann::ordered_json& j,
                         std::pmr::memory_resource* memory = std::pmr::get_default_resource());
  // from_json into this Undefined value, in place: containers' items are written where they
  // stay instead of being built as temporaries and moved there.
  void set_json(const nlohmann::ordered_json& j, std::pmr::memory_resource* memory);

 private:
  Kind kind_ = Kind::Undefined;
  bool markup_ = false;
  union {
    bool b;
    int64_t i;
    double f;
    const std::string* borrowed;
  } scalar_{};
  std::shared_ptr<void> ptr_;  // what the kind says; strings and lists are never mutated once shared
};

struct List {
  // Range: range() (iterates and indexes like a list; prints as range(a, b) and is not JSON).
  enum class Shape : uint8_t { List, Tuple, Generator, Range };
  std::vector<Value> items;
  Shape shape = Shape::List;
  bool group = false;  // groupby's (grouper, list) named tuple
  int64_t range_start = 0, range_stop = 0, range_step = 1;
};

// Insertion-ordered, keys compared with Python's ==; templates' dicts are small.
struct Dict {
  Dict() = default;
  explicit Dict(std::pmr::memory_resource* memory) : items(memory) {}
  std::pmr::vector<std::pair<Value, Value>> items;
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  void set(Value key, Value value);
};

inline Value make_list(std::vector<Value> items, List::Shape shape = List::Shape::List) {
  auto l = std::make_shared<List>();
  l->items = std::move(items);
  l->shape = shape;
  return Value(std::move(l));
}

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  // The keyword `name` (removed from the list), else the positional argument at `index`, else
  // `fallback`. Used by builtins to read Python-style signatures.
  Value take(size_t index, std::string_view name, Value fallback = Value());
  // After every take(): anything left over is a TypeError naming `function`.
  void expect_consumed(std::string_view function, size_t positional_count) const;
};

// Namespaces, loops, macros, bound methods, cyclers: attribute access and calls.
// Objects are always owned by shared_ptr; bound methods keep their object alive through
// shared_from_this.
class Object : public std::enable_shared_from_this<Object> {
 public:
  virtual ~Object() = default;
  virtual std::string type_name() const = 0;
  virtual std::string repr() const { return "<" + type_name() + " object>"; }
  virtual Value attribute(const std::string& name) const;  // Undefined when absent
  virtual bool callable() const { return false; }
  virtual Value call(Interpreter& interp, CallArgs& args);
  // Namespace attribute assignment ({% set ns.x = ... %}); others refuse.
  virtual bool set_attribute(const std::string&, Value) { return false; }
};

// Byte equality of two strings; the short ones templates compare (keys, roles) without a call.
inline bool same_text(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  if (a.size() > 16) return a == b;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return false;
  return true;
}

// Python's ==, and the ordering of <, <=, >, >= (TypeError across types).
bool equals(const Value& a, const Value& b);
int compare(const Value& a, const Value& b);  // -1, 0, 1

// int(x) of a finite float, truncated; OverflowError beyond 64 bits (Python's ints are unbounded,
// this engine's are not), ValueError / OverflowError for nan / inf as Python raises.
int64_t float_to_int(double x);

// Python float repr (shortest round-trip, exponent rules of float.__repr__).
std::string python_float_repr(double v);
// Python str.isspace() for one code point.
bool python_isspace(char32_t c);
// The ends of UTF-8 text without the code points `drop` accepts (str.strip(chars) and its l / r forms).
std::string_view strip_code_points(std::string_view s, bool left, bool right, const std::function<bool(char32_t)>& drop);
// Python's str.strip() / lstrip() / rstrip() without arguments (Unicode whitespace), on UTF-8.
std::string_view strip_whitespace(std::string_view s, bool left, bool right);

// json.dumps(value, ensure_ascii, indent, separators, sort_keys) as transformers' tojson calls it.
struct JsonFormat {
  bool ensure_ascii = false;
  std::optional<std::string> indent;  // nullopt: one line
  std::string item_separator = ", ", key_separator = ": ";
  bool sort_keys = false;
};
std::string to_json(const Value& v, const JsonFormat& format);
void append_json(std::string& out, const Value& v, const JsonFormat& format);  // to_json, appended to `out`
// markupsafe.escape: & < > " ' as HTML entities.
std::string html_escape(const std::string& s);

// UTF-8 strings as Python sees them: code points.
std::u32string to_code_points(std::string_view s);
std::string from_code_points(std::u32string_view s);
size_t code_point_count(std::string_view s);
bool valid_utf8(std::string_view s);

}  // namespace plugformer::jinja
