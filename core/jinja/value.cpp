#include "jinja/value.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <utf8proc.h>

#include "tokenizers/unicode.h"

namespace plugformer::jinja {

void fail(std::string kind, std::string message) { throw RenderError{std::move(kind), std::move(message)}; }

Value Value::undefined(std::string message, bool unsafe) {
  Value v;
  v.ptr_ = std::make_shared<UndefinedInfo>(UndefinedInfo{std::move(message), unsafe});
  return v;
}
Value::Value(std::string s) : kind_(Kind::String), ptr_(std::make_shared<std::string>(std::move(s))) {}
Value::Value(std::shared_ptr<List> l) : kind_(Kind::List), ptr_(std::move(l)) {}
Value::Value(std::shared_ptr<Dict> d) : kind_(Kind::Dict), ptr_(std::move(d)) {}
Value::Value(std::shared_ptr<Object> o) : kind_(Kind::Object), ptr_(std::move(o)) {}

bool Value::is_tuple() const { return kind_ == Kind::List && list().shape == List::Shape::Tuple; }
bool Value::is_generator() const { return kind_ == Kind::List && list().shape == List::Shape::Generator; }

void Value::fail_undefined() const {
  const UndefinedInfo* info = undefined_info();
  if (info && info->unsafe) fail("SecurityError", info->message);
  fail("UndefinedError", info ? info->message : "value is undefined");
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::Undefined: case Kind::None: return false;
    case Kind::Bool: return scalar_.b;
    case Kind::Int: return scalar_.i != 0;
    case Kind::Float: return scalar_.f != 0.0;
    case Kind::String: return !str().empty();
    case Kind::List: return is_generator() || !list().items.empty();
    case Kind::Dict: return !dict().items.empty();
    case Kind::Object: return true;
  }
  return false;
}

std::string Value::type_name() const {
  switch (kind_) {
    case Kind::Undefined: return "Undefined";
    case Kind::None: return "NoneType";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::List:
      switch (list().shape) {
        case List::Shape::Tuple: return "tuple";
        case List::Shape::Generator: return "generator";
        case List::Shape::Range: return "range";
        default: return "list";
      }
    case Kind::Dict: return "dict";
    case Kind::Object: return object().type_name();
  }
  return "object";
}

std::string Value::to_str() const {
  if (kind_ == Kind::String) return str();
  std::string s;
  append_str(s);
  return s;
}

void Value::append_str(std::string& out) const {
  switch (kind_) {
    case Kind::Undefined: return;
    case Kind::String: out += str(); return;
    default: append_repr(out);
  }
}

namespace {

bool python_isprintable(char32_t c) {
  if (c == U' ') return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS: case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN: case UTF8PROC_CATEGORY_ZL: case UTF8PROC_CATEGORY_ZP: case UTF8PROC_CATEGORY_ZS:
      return false;
    default: return true;
  }
}

void append_hex(std::string& out, const char* prefix, uint32_t v, int digits) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%s%0*x", prefix, digits, v);
  out += buf;
}

void append_string_repr(std::string& out, const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  out.push_back(quote);
  for (size_t i = 0; i < s.size();) {
    char32_t c = tok::utf8_next(s, i);
    if (c == static_cast<char32_t>(quote) || c == U'\\') { out.push_back('\\'); out.push_back(static_cast<char>(c)); }
    else if (c == U'\n') out += "\\n";
    else if (c == U'\r') out += "\\r";
    else if (c == U'\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) append_hex(out, "\\x", c, 2);
    else if (c < 0x80 || python_isprintable(c)) tok::utf8_append(out, c);
    else if (c <= 0xff) append_hex(out, "\\x", c, 2);
    else if (c <= 0xffff) append_hex(out, "\\u", c, 4);
    else append_hex(out, "\\U", c, 8);
  }
  out.push_back(quote);
}

}  // namespace

void Value::append_repr(std::string& out) const {
  switch (kind_) {
    case Kind::Undefined: out += "Undefined"; return;
    case Kind::None: out += "None"; return;
    case Kind::Bool: out += scalar_.b ? "True" : "False"; return;
    case Kind::Int: out += std::to_string(scalar_.i); return;
    case Kind::Float: out += python_float_repr(scalar_.f); return;
    case Kind::String: append_string_repr(out, str()); return;
    case Kind::List: {
      const List& l = list();
      if (l.shape == List::Shape::Generator) { out += "<generator object>"; return; }
      if (l.shape == List::Shape::Range) {
        out += "range(" + std::to_string(l.range_start) + ", " + std::to_string(l.range_stop) +
               (l.range_step != 1 ? ", " + std::to_string(l.range_step) : "") + ")";
        return;
      }
      const bool tuple = l.shape == List::Shape::Tuple;
      out.push_back(tuple ? '(' : '[');
      for (size_t i = 0; i < l.items.size(); ++i) {
        if (i) out += ", ";
        l.items[i].append_repr(out);
      }
      if (tuple && l.items.size() == 1) out.push_back(',');
      out.push_back(tuple ? ')' : ']');
      return;
    }
    case Kind::Dict: {
      out.push_back('{');
      bool first = true;
      for (const auto& [k, v] : dict().items) {
        if (!first) out += ", ";
        first = false;
        k.append_repr(out);
        out += ": ";
        v.append_repr(out);
      }
      out.push_back('}');
      return;
    }
    case Kind::Object: out += object().repr(); return;
  }
}

Value Value::from_json(const nlohmann::ordered_json& j, std::pmr::memory_resource* memory) {
  Value v;
  v.set_json(j, memory);
  return v;
}

void Value::set_json(const nlohmann::ordered_json& j, std::pmr::memory_resource* memory) {
  using json = nlohmann::ordered_json;
  switch (j.type()) {
    case json::value_t::null: kind_ = Kind::None; return;
    case json::value_t::boolean: kind_ = Kind::Bool; scalar_.b = j.get<bool>(); return;
    case json::value_t::number_integer: kind_ = Kind::Int; scalar_.i = j.get<int64_t>(); return;
    case json::value_t::number_unsigned: {
      const auto u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) {
        kind_ = Kind::Float;
        scalar_.f = static_cast<double>(u);
      } else {
        kind_ = Kind::Int;
        scalar_.i = static_cast<int64_t>(u);
      }
      return;
    }
    case json::value_t::number_float: kind_ = Kind::Float; scalar_.f = j.get<double>(); return;
    case json::value_t::string: {
      const std::string& s = j.get_ref<const std::string&>();
      if (!valid_utf8(s)) type_error("a template variable holds a string that is not valid UTF-8");
      kind_ = Kind::String;
      scalar_.borrowed = &s;
      return;
    }
    case json::value_t::array: {
      const auto& array = j.get_ref<const json::array_t&>();
      auto l = std::allocate_shared<List>(std::pmr::polymorphic_allocator<List>(memory));
      l->items.resize(array.size());
      for (size_t i = 0; i < array.size(); ++i) l->items[i].set_json(array[i], memory);
      kind_ = Kind::List;
      ptr_ = std::move(l);
      return;
    }
    case json::value_t::object: {
      const auto& object = j.get_ref<const json::object_t&>();
      auto d = std::allocate_shared<Dict>(std::pmr::polymorphic_allocator<Dict>(memory), memory);
      d->items.resize(object.size());
      size_t i = 0;
      for (const auto& [key, value] : object) {
        auto& [k, v] = d->items[i++];
        k.kind_ = Kind::String;
        k.scalar_.borrowed = &key;
        v.set_json(value, memory);
      }
      kind_ = Kind::Dict;
      ptr_ = std::move(d);
      return;
    }
    default: return;  // binary and discarded values: Undefined
  }
}

const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : items)
    if (k.is_string() && same_text(k.str(), key)) return &v;
  return nullptr;
}
const Value* Dict::find(const Value& key) const {
  if (key.is_string()) return find(std::string_view(key.str()));
  for (const auto& [k, v] : items)
    if (equals(k, key)) return &v;
  return nullptr;
}
void Dict::set(Value key, Value value) {
  for (auto& [k, v] : items)
    if (equals(k, key)) { v = std::move(value); return; }
  items.emplace_back(std::move(key), std::move(value));
}

Value CallArgs::take(size_t index, std::string_view name, Value fallback) {
  for (auto it = keyword.begin(); it != keyword.end(); ++it)
    if (it->first == name) {
      Value v = std::move(it->second);
      keyword.erase(it);
      if (index < positional.size()) type_error("got multiple values for argument '" + std::string(name) + "'");
      return v;
    }
  if (index < positional.size()) return positional[index];
  return fallback;
}

void CallArgs::expect_consumed(std::string_view function, size_t positional_count) const {
  if (!keyword.empty())
    type_error(std::string(function) + "() got an unexpected keyword argument '" + keyword.front().first + "'");
  if (positional.size() > positional_count)
    type_error(std::string(function) + "() takes at most " + std::to_string(positional_count) + " argument(s) (" +
               std::to_string(positional.size()) + " given)");
}

Value Object::attribute(const std::string&) const { return Value(); }
Value Object::call(Interpreter&, CallArgs&) { type_error("'" + type_name() + "' object is not callable"); }

bool equals(const Value& a, const Value& b) {
  using K = Value::Kind;
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_float() == b.as_float();
    return a.as_int() == b.as_int();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case K::Undefined: case K::None: return true;
    case K::String: return same_text(a.str(), b.str());
    case K::List: {
      const List &x = a.list(), &y = b.list();
      if (x.shape == List::Shape::Generator || y.shape == List::Shape::Generator) return &x == &y;
      if (x.shape != y.shape || x.items.size() != y.items.size()) return false;
      for (size_t i = 0; i < x.items.size(); ++i)
        if (!equals(x.items[i], y.items[i])) return false;
      return true;
    }
    case K::Dict: {
      const Dict &x = a.dict(), &y = b.dict();
      if (x.items.size() != y.items.size()) return false;
      for (const auto& [k, v] : x.items) {
        const Value* w = y.find(k);
        if (!w || !equals(v, *w)) return false;
      }
      return true;
    }
    case K::Object: return &a.object() == &b.object();
    default: return false;
  }
}

int compare(const Value& a, const Value& b) {
  if (a.is_undefined()) a.fail_undefined();
  if (b.is_undefined()) b.fail_undefined();
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) {
      double x = a.as_float(), y = b.as_float();
      return x < y ? -1 : x > y ? 1 : 0;
    }
    int64_t x = a.as_int(), y = b.as_int();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    int c = a.str().compare(b.str());  // UTF-8 byte order is code point order
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_list() && b.is_list() && a.list().shape == b.list().shape && !a.is_generator()) {
    const auto &x = a.list().items, &y = b.list().items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i)
      if (!equals(x[i], y[i])) return compare(x[i], y[i]);
    return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
  }
  type_error("'<' not supported between instances of '" + a.type_name() + "' and '" + b.type_name() + "'");
}

int64_t float_to_int(double x) {
  if (std::isnan(x)) fail("ValueError", "cannot convert float NaN to integer");
  if (std::isinf(x)) fail("OverflowError", "cannot convert float infinity to integer");
  const double t = std::trunc(x);
  // [-2^63, 2^63): the doubles that fit int64_t.
  if (t < -9223372036854775808.0 || t >= 9223372036854775808.0)
    fail("OverflowError", "integer result too large for this engine (64-bit integers)");
  return static_cast<int64_t>(t);
}

std::string python_float_repr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // e.g. "-1.2345e+02", shortest round-trip digits
  bool negative = sci[0] == '-';
  if (negative) sci.erase(0, 1);
  size_t e_pos = sci.find('e');
  std::string digits;
  for (size_t i = 0; i < e_pos; ++i)
    if (sci[i] != '.') digits.push_back(sci[i]);
  int exponent = std::stoi(sci.substr(e_pos + 1));
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      out += "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
    } else if (static_cast<size_t>(exponent) + 1 >= digits.size()) {
      out += digits + std::string(static_cast<size_t>(exponent) + 1 - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, static_cast<size_t>(exponent) + 1) + "." + digits.substr(static_cast<size_t>(exponent) + 1);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char exp_buf[16];
  std::snprintf(exp_buf, sizeof exp_buf, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  return out + exp_buf;
}

bool python_isspace(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

namespace {
template <typename Drop>
std::string_view strip_if(std::string_view s, bool left, bool right, const Drop& drop) {
  size_t a = 0, b = s.size();
  if (left)
    while (a < b) {
      size_t next = a;
      if (!drop(tok::utf8_next(s, next))) break;
      a = next;
    }
  if (right)
    while (b > a) {
      size_t start = b - 1;
      while (start > a && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
      size_t next = start;
      if (!drop(tok::utf8_next(s, next))) break;
      b = start;
    }
  return s.substr(a, b - a);
}
}  // namespace

std::string_view strip_code_points(std::string_view s, bool left, bool right, const std::function<bool(char32_t)>& drop) {
  return strip_if(s, left, right, drop);
}

std::string_view strip_whitespace(std::string_view s, bool left, bool right) {
  return strip_if(s, left, right, python_isspace);  // called directly: message contents are trimmed on every render
}

namespace {

// For each byte: 1 when JSON escapes it, 2 when ensure_ascii does.
constexpr std::array<uint8_t, 256> kJsonEscapes = [] {
  std::array<uint8_t, 256> t{};
  for (int c = 0; c < 0x20; ++c) t[c] = 1;
  t['"'] = t['\\'] = 1;
  t[0x7F] = 2;  // Python's ensure_ascii escapes DEL too
  for (int c = 0x80; c < 0x100; ++c) t[c] = 2;
  return t;
}();

std::string json_float(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v < 0 ? "-Infinity" : "Infinity";
  return python_float_repr(v);
}

std::string json_key(const Value& k) {
  switch (k.kind()) {
    case Value::Kind::String: return k.str();
    case Value::Kind::Bool: return k.as_bool() ? "true" : "false";
    case Value::Kind::None: return "null";
    case Value::Kind::Int: return std::to_string(k.as_int());
    case Value::Kind::Float: return json_float(k.as_float());
    default: type_error("keys must be str, int, float, bool or None, not " + k.type_name());
  }
}

// json.dumps into `out` through a buffer: templates' JSON is many short pieces (keys, separators,
// indents), each costing more to append to a string one by one than to copy. Line breaks (a
// newline and the indent repeated) are built once per call and grown as deeper levels need them.
class JsonWriter {
 public:
  JsonWriter(std::string& out, const JsonFormat& f) : out_(out), f_(f) {}

  // Writes v; the text is in `out` once finish() returns.
  void write(const Value& v, size_t depth) {
    if (depth > 512) fail("RecursionError", "maximum recursion depth exceeded while encoding a JSON object");
    switch (v.kind()) {
      case Value::Kind::None: put("null"); return;
      case Value::Kind::Bool: put(v.as_bool() ? "true" : "false"); return;
      case Value::Kind::Int: {
        char digits[24];
        put(std::string_view(digits, std::to_chars(digits, digits + sizeof digits, v.as_int()).ptr - digits));
        return;
      }
      case Value::Kind::Float: put(json_float(v.as_float())); return;
      case Value::Kind::String: string(v.str()); return;
      case Value::Kind::List: {
        if (v.is_generator() || v.list().shape == List::Shape::Range) break;
        const auto& items = v.list().items;
        if (items.empty()) { put("[]"); return; }
        put('[');
        for (size_t i = 0; i < items.size(); ++i) {
          if (i) put(f_.item_separator);
          if (f_.indent) newline(depth + 1);
          write(items[i], depth + 1);
        }
        if (f_.indent) newline(depth);
        put(']');
        return;
      }
      case Value::Kind::Dict: {
        const auto& items = v.dict().items;
        if (items.empty()) { put("{}"); return; }
        std::vector<const std::pair<Value, Value>*> sorted;  // only with sort_keys
        if (f_.sort_keys) {
          for (const auto& e : items) sorted.push_back(&e);
          std::stable_sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return compare(a->first, b->first) < 0; });
        }
        put('{');
        for (size_t i = 0; i < items.size(); ++i) {
          const auto& [key, value] = f_.sort_keys ? *sorted[i] : items[i];
          if (i) put(f_.item_separator);
          if (f_.indent) newline(depth + 1);
          if (key.is_string()) string(key.str());
          else string(json_key(key));
          put(f_.key_separator);
          write(value, depth + 1);
        }
        if (f_.indent) newline(depth);
        put('}');
        return;
      }
      default: break;
    }
    type_error("Object of type " + v.type_name() + " is not JSON serializable");
  }

  void finish() { out_.append(buffer_, used_); used_ = 0; }

 private:
  void put(std::string_view s) {
    if (used_ + s.size() > sizeof buffer_) {
      finish();
      if (s.size() > sizeof buffer_) { out_.append(s); return; }
    }
    if (s.size() <= 4) {  // separators and literals: no call
      for (char c : s) buffer_[used_++] = c;
      return;
    }
    std::memcpy(buffer_ + used_, s.data(), s.size());
    used_ += s.size();
  }
  void put(char c) {
    if (used_ == sizeof buffer_) finish();
    buffer_[used_++] = c;
  }
  void put_hex(uint32_t v) {  // \uXXXX
    char text[8];
    std::snprintf(text, sizeof text, "\\u%04x", v);
    put(std::string_view(text, 6));
  }

  // A line break and `level` indents, copied in 16-byte blocks: line_break_ is kept at least 16
  // bytes longer than any prefix taken from it.
  void newline(size_t level) {
    const std::string& unit = *f_.indent;
    if (unit.empty()) return put('\n');
    const size_t length = 1 + level * unit.size();
    while (line_break_.size() < length + 16) line_break_ += unit;
    if (used_ + length + 16 > sizeof buffer_) {
      finish();
      if (length + 16 > sizeof buffer_) return out_.append(line_break_.data(), length), void();
    }
    for (size_t i = 0; i < length; i += 16) std::memcpy(buffer_ + used_ + i, line_break_.data() + i, 16);
    used_ += length;
  }

  // A JSON string, 16 bytes at a time: each block is copied to the buffer's end, and the part
  // before the first byte that needs an escape is kept.
  void string(const std::string& s) {
    put('"');
    for (size_t i = 0; i < s.size();) {
      const size_t n = std::min<size_t>(16, s.size() - i);
      if (used_ + 16 > sizeof buffer_) finish();
      const size_t clean = n == 16 ? copy_clean_block(s.data() + i) : copy_clean_prefix(s.data() + i, n);
      used_ += clean;
      i += clean;
      if (clean < n) escape(s, i);
    }
    put('"');
  }

  // Copies bytes to the buffer's end (not yet counted as used) until one needs an escape; returns
  // how many need none. The block form copies all 16 and counts.
  size_t copy_clean_block(const char* block) {
#if defined(__SSE2__)
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block));
    const __m128i special = _mm_or_si128(
        _mm_or_si128(_mm_cmpeq_epi8(bytes, _mm_set1_epi8('"')), _mm_cmpeq_epi8(bytes, _mm_set1_epi8('\\'))),
        _mm_cmpeq_epi8(_mm_min_epu8(bytes, _mm_set1_epi8(0x1F)), bytes));  // control characters
    unsigned stop = static_cast<unsigned>(_mm_movemask_epi8(special)) | 0x10000u;
    if (f_.ensure_ascii)  // and everything from DEL up
      stop |= static_cast<unsigned>(_mm_movemask_epi8(_mm_or_si128(bytes, _mm_cmpeq_epi8(bytes, _mm_set1_epi8(0x7F)))));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(buffer_ + used_), bytes);
    return static_cast<size_t>(__builtin_ctz(stop));
#else
    return copy_clean_prefix(block, 16);
#endif
  }
  size_t copy_clean_prefix(const char* text, size_t n) {
    const uint8_t escaped = f_.ensure_ascii ? 3 : 1;
    char* out = buffer_ + used_;
    size_t clean = 0;
    for (; clean < n && !(kJsonEscapes[static_cast<unsigned char>(text[clean])] & escaped); ++clean) out[clean] = text[clean];
    return clean;
  }

  // The escape of the code point at s[i] (a byte JSON escapes, or non-ASCII under ensure_ascii); i moves past it.
  void escape(const std::string& s, size_t& i) {
    const unsigned char b = static_cast<unsigned char>(s[i]);
    if (b >= 0x80) {
      char32_t c = tok::utf8_next(s, i);
      if (c >= 0x10000) {
        c -= 0x10000;
        put_hex(0xd800 + (c >> 10));
        put_hex(0xdc00 + (c & 0x3ff));
      } else {
        put_hex(c);
      }
      return;
    }
    ++i;
    switch (b) {
      case '"': put("\\\""); break;
      case '\\': put("\\\\"); break;
      case '\n': put("\\n"); break;
      case '\r': put("\\r"); break;
      case '\t': put("\\t"); break;
      case '\b': put("\\b"); break;
      case '\f': put("\\f"); break;
      default: put_hex(b);  // the other control characters
    }
  }

  std::string& out_;
  const JsonFormat& f_;
  std::string line_break_ = "\n";
  char buffer_[2048];
  size_t used_ = 0;
};

}  // namespace

void append_json(std::string& out, const Value& v, const JsonFormat& format) {
  JsonWriter writer(out, format);
  writer.write(v, 0);
  writer.finish();
}

std::string to_json(const Value& v, const JsonFormat& format) {
  std::string out;
  out.reserve(256);
  append_json(out, v, format);
  return out;
}

std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

std::u32string to_code_points(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) out.push_back(tok::utf8_next(s, i));
  return out;
}

std::string from_code_points(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) tok::utf8_append(out, c);
  return out;
}

namespace {
// Where the first non-ASCII byte of [p, end) is (end if none): 16 at a time (SSE2, every x86-64),
// then eight, then one.
const unsigned char* skip_ascii(const unsigned char* p, const unsigned char* end) {
#if defined(__SSE2__)
  for (; end - p >= 16; p += 16)
    if (const int high = _mm_movemask_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))))
      return p + __builtin_ctz(static_cast<unsigned>(high));
#endif
  for (; end - p >= 8; p += 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    if (word & 0x8080808080808080ull) break;
  }
  while (p < end && *p < 0x80) ++p;
  return p;
}
}  // namespace

bool valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while ((p = skip_ascii(p, end)) < end) {
    const unsigned char b = *p;
    const size_t n = (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || static_cast<size_t>(end - p) < n) return false;
    char32_t c = n == 2 ? (b & 0x1F) : n == 3 ? (b & 0x0F) : (b & 0x07);
    for (size_t k = 1; k < n; ++k) {
      if ((p[k] & 0xC0) != 0x80) return false;
      c = (c << 6) | (p[k] & 0x3F);
    }
    static const char32_t min_for_length[] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min_for_length[n] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return false;
    p += n;
  }
  return true;
}

size_t code_point_count(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace plugformer::jinja
