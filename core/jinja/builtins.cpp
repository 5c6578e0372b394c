// Jinja2's filters, tests and globals (jinja2/filters.py, tests.py, defaults.py), transformers'
// globals (raise_exception, strftime_now) and tojson, and the Python str / list / dict methods the
// immutable sandbox lets templates call.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>
#include <random>
#include <unordered_map>

#include <utf8proc.h>

#include "jinja/frame.h"
#include "tokenizers/unicode.h"

namespace plugformer::jinja {
namespace {

// ---- helpers over Python strings ----

using U32 = std::u32string;

bool is_cased_upper(char32_t c) { return utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_LU; }
bool is_cased_lower(char32_t c) { return utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_LL; }
bool is_cased(char32_t c) {
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}
bool is_alpha(char32_t c) {
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
}
bool is_decimal(char32_t c) { return utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_ND; }
bool is_word(char32_t c) {  // regex \w
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return is_alpha(c) || cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO ||
         c == U'_';
}
char32_t upper(char32_t c) { return c < 0x80 ? static_cast<char32_t>(std::toupper(static_cast<int>(c))) : static_cast<char32_t>(utf8proc_toupper(static_cast<utf8proc_int32_t>(c))); }
char32_t lower(char32_t c) { return c < 0x80 ? static_cast<char32_t>(std::tolower(static_cast<int>(c))) : static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))); }
char32_t title(char32_t c) { return c < 0x80 ? upper(c) : static_cast<char32_t>(utf8proc_totitle(static_cast<utf8proc_int32_t>(c))); }

std::string map_chars(const std::string& s, char32_t (*f)(char32_t)) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) tok::utf8_append(out, f(tok::utf8_next(s, i)));
  return out;
}
std::string str_lower(const std::string& s) { return map_chars(s, lower); }
// Python's str.upper() uses the full case mappings: a few characters become two or three.
std::string str_upper(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    char32_t c = tok::utf8_next(s, i);
    switch (c) {
      case 0xDF: out += "SS"; break;
      case 0xFB00: out += "FF"; break;
      case 0xFB01: out += "FI"; break;
      case 0xFB02: out += "FL"; break;
      case 0xFB03: out += "FFI"; break;
      case 0xFB04: out += "FFL"; break;
      case 0xFB05: case 0xFB06: out += "ST"; break;
      default: tok::utf8_append(out, upper(c));
    }
  }
  return out;
}
// str.casefold(): Unicode case folding (ß -> ss).
std::string str_casefold(const std::string& s) {
  utf8proc_uint8_t* folded = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()),
                                    &folded, static_cast<utf8proc_option_t>(UTF8PROC_CASEFOLD));
  if (n < 0) return str_lower(s);
  std::string out(reinterpret_cast<char*>(folded), static_cast<size_t>(n));
  std::free(folded);
  return out;
}

std::string str_capitalize(const std::string& s) {
  U32 cps = to_code_points(s);
  for (size_t i = 0; i < cps.size(); ++i) cps[i] = i == 0 ? title(cps[i]) : lower(cps[i]);
  return from_code_points(cps);
}

// Python's str.title(): a cased character after an uncased one starts a word.
std::string str_title(const std::string& s) {
  U32 cps = to_code_points(s);
  bool previous_cased = false;
  for (auto& c : cps) {
    char32_t orig = c;
    c = previous_cased ? lower(c) : title(c);
    previous_cased = is_cased(orig);
  }
  return from_code_points(cps);
}

// str.strip / lstrip / rstrip: whitespace, or the characters of `chars`. Works on the UTF-8
// bytes (message contents are trimmed on every render).
// str.strip(chars) and its l / r forms: the part of `s` that is kept.
std::string_view str_strip(std::string_view s, const Value& chars, bool left, bool right) {
  if (chars.is_none() || chars.is_undefined()) return strip_whitespace(s, left, right);
  if (!chars.is_string()) type_error("strip arg must be None or str");
  const U32 set = to_code_points(chars.str());
  return strip_code_points(s, left, right, [&](char32_t c) { return set.find(c) != U32::npos; });
}

std::vector<Value> str_split(const std::string& s, const Value& sep, int64_t maxsplit, bool from_right) {
  std::vector<std::string> parts;
  if (sep.is_none() || sep.is_undefined()) {
    U32 cps = to_code_points(s);
    if (!from_right) {
      size_t i = 0;
      while (true) {
        while (i < cps.size() && python_isspace(cps[i])) ++i;
        if (i >= cps.size()) break;
        if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
          size_t end = cps.size();
          while (end > i && python_isspace(cps[end - 1])) --end;
          parts.push_back(from_code_points(std::u32string_view(cps).substr(i, end - i)));
          break;
        }
        size_t j = i;
        while (j < cps.size() && !python_isspace(cps[j])) ++j;
        parts.push_back(from_code_points(std::u32string_view(cps).substr(i, j - i)));
        i = j;
      }
    } else {
      int64_t i = static_cast<int64_t>(cps.size()) - 1;
      while (true) {
        while (i >= 0 && python_isspace(cps[static_cast<size_t>(i)])) --i;
        if (i < 0) break;
        if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
          size_t start = 0;
          while (start < static_cast<size_t>(i) && python_isspace(cps[start])) ++start;
          parts.push_back(from_code_points(std::u32string_view(cps).substr(start, static_cast<size_t>(i) + 1 - start)));
          break;
        }
        int64_t j = i;
        while (j >= 0 && !python_isspace(cps[static_cast<size_t>(j)])) --j;
        parts.push_back(from_code_points(std::u32string_view(cps).substr(static_cast<size_t>(j + 1), static_cast<size_t>(i - j))));
        i = j;
      }
      std::reverse(parts.begin(), parts.end());
    }
  } else {
    if (!sep.is_string()) type_error("must be str or None, not " + sep.type_name());
    const std::string& d = sep.str();
    if (d.empty()) fail("ValueError", "empty separator");
    if (!from_right) {
      size_t start = 0;
      while (true) {
        size_t p = (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) ? std::string::npos : s.find(d, start);
        if (p == std::string::npos) { parts.push_back(s.substr(start)); break; }
        parts.push_back(s.substr(start, p - start));
        start = p + d.size();
      }
    } else {
      size_t end = s.size();
      while (true) {
        size_t p = (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) || end < d.size()
                       ? std::string::npos
                       : s.rfind(d, end - d.size());
        if (p == std::string::npos) { parts.push_back(s.substr(0, end)); break; }
        parts.push_back(s.substr(p + d.size(), end - p - d.size()));
        end = p;
      }
      std::reverse(parts.begin(), parts.end());
    }
  }
  std::vector<Value> out;
  out.reserve(parts.size());
  for (auto& p : parts) out.emplace_back(std::move(p));
  return out;
}

// str.splitlines(): Python's line boundaries.
std::vector<std::string> split_lines(const std::string& s, bool keepends) {
  std::vector<std::string> lines;
  U32 cps = to_code_points(s);
  size_t start = 0;
  for (size_t i = 0; i < cps.size(); ++i) {
    char32_t c = cps[i];
    bool boundary = c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || c == 0x1c || c == 0x1d || c == 0x1e ||
                    c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!boundary) continue;
    size_t end = i;
    if (c == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') ++i;
    lines.push_back(from_code_points(std::u32string_view(cps).substr(start, (keepends ? i + 1 : end) - start)));
    start = i + 1;
  }
  if (start < cps.size()) lines.push_back(from_code_points(std::u32string_view(cps).substr(start)));
  return lines;
}

std::string str_replace(const std::string& s, const std::string& old, const std::string& with, int64_t count) {
  std::string out;
  if (old.empty()) {  // Python inserts `with` between characters (and at both ends)
    U32 cps = to_code_points(s);
    int64_t done = 0;
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || done < count) { out += with; ++done; }
      if (i < cps.size()) tok::utf8_append(out, cps[i]);
    }
    return out;
  }
  size_t start = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t p = s.find(old, start);
    if (p == std::string::npos) break;
    out.append(s, start, p - start);
    out += with;
    start = p + old.size();
    ++done;
  }
  out.append(s, start, std::string::npos);
  return out;
}

const std::string& need_str(const Value& v, const char* what) {
  if (v.is_undefined()) v.fail_undefined();
  if (!v.is_string()) type_error(std::string(what) + " must be str, not " + v.type_name());
  return v.str();
}

int64_t need_int(const Value& v, const char* what) {
  if (v.is_undefined()) v.fail_undefined();
  if (!(v.is_int() || v.is_bool())) type_error(std::string("'") + v.type_name() + "' object cannot be interpreted as an integer (" + what + ")");
  return v.as_int();
}

// A run of decimal digits as an integer; OverflowError beyond 64 bits.
int64_t parse_digits(const std::string& digits) {
  int64_t v = 0;
  for (char c : digits)
    if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, c - '0', &v))
      fail("OverflowError", "integer " + digits + " too large for this engine (64-bit integers)");
  return v;
}

// Padding and repetition widths: a width of gigabytes is a MemoryError, as the output limit would be.
constexpr int64_t kMaxWidth = int64_t{1} << 26;
int64_t checked_width(int64_t width) {
  if (width > kMaxWidth) fail("MemoryError", "width " + std::to_string(width) + " is larger than the engine allows");
  return width;
}

// soft_str: str() of anything, Undefined as "".
std::string soft_str(const Value& v) { return v.to_str(); }

size_t python_len(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Undefined: return 0;
    case Value::Kind::String: return code_point_count(v.str());
    case Value::Kind::List:
      if (v.is_generator()) type_error("object of type 'generator' has no len()");
      return v.list().items.size();
    case Value::Kind::Dict: return v.dict().items.size();
    default: type_error("object of type '" + v.type_name() + "' has no len()");
  }
}

Value generator(std::vector<Value> items) { return make_list(std::move(items), List::Shape::Generator); }

// ---- formatting (str % args, str.format, format specs) ----

struct Spec {
  char fill = ' ', align = 0, sign = '-';
  bool alternate = false, zero = false, grouping = false;
  int width = -1, precision = -1;
  char type = 0;
};

Spec parse_spec(const std::string& s) {
  Spec spec;
  size_t i = 0;
  auto is_align = [](char c) { return c == '<' || c == '>' || c == '^' || c == '='; };
  if (s.size() >= 2 && is_align(s[1])) { spec.fill = s[0]; spec.align = s[1]; i = 2; }
  else if (!s.empty() && is_align(s[0])) { spec.align = s[0]; i = 1; }
  if (i < s.size() && (s[i] == '+' || s[i] == '-' || s[i] == ' ')) spec.sign = s[i++];
  if (i < s.size() && s[i] == '#') { spec.alternate = true; ++i; }
  if (i < s.size() && s[i] == '0') { spec.zero = true; ++i; }
  std::string w;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) w.push_back(s[i++]);
  if (!w.empty()) spec.width = static_cast<int>(checked_width(parse_digits(w)));
  if (i < s.size() && (s[i] == ',' || s[i] == '_')) { spec.grouping = true; ++i; }
  if (i < s.size() && s[i] == '.') {
    ++i;
    std::string p;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) p.push_back(s[i++]);
    spec.precision = static_cast<int>(checked_width(p.empty() ? 0 : parse_digits(p)));
  }
  if (i < s.size()) spec.type = s[i++];
  if (i != s.size()) fail("ValueError", "Invalid format specifier '" + s + "'");
  return spec;
}

std::string pad(std::string body, const Spec& spec, char default_align) {
  size_t len = code_point_count(body);
  if (spec.width < 0 || len >= static_cast<size_t>(spec.width)) return body;
  size_t n = static_cast<size_t>(spec.width) - len;
  char align = spec.align ? spec.align : (spec.zero && default_align == '>' ? '=' : default_align);
  char fill = spec.align ? spec.fill : (spec.zero && default_align == '>' ? '0' : ' ');
  if (align == '<') return body + std::string(n, fill);
  if (align == '>') return std::string(n, fill) + body;
  if (align == '^') return std::string(n / 2, fill) + body + std::string(n - n / 2, fill);
  size_t sign_len = !body.empty() && (body[0] == '-' || body[0] == '+' || body[0] == ' ') ? 1 : 0;
  return body.substr(0, sign_len) + std::string(n, fill) + body.substr(sign_len);
}

std::string format_number(const Value& v, const Spec& spec) {
  char type = spec.type;
  std::string body;
  const bool is_int_type = type == 'd' || type == 'x' || type == 'X' || type == 'o' || type == 'b' || type == 'c' || type == 'n';
  if (v.is_float() && is_int_type) fail("ValueError", std::string("Unknown format code '") + type + "' for object of type 'float'");
  if ((v.is_int() || v.is_bool()) && (type == 0 || is_int_type)) {
    int64_t x = v.as_int();
    uint64_t mag = x < 0 ? static_cast<uint64_t>(-(x + 1)) + 1 : static_cast<uint64_t>(x);
    if (type == 'c') return pad(from_code_points(U32(1, static_cast<char32_t>(x))), spec, '<');
    int base = type == 'x' || type == 'X' ? 16 : type == 'o' ? 8 : type == 'b' ? 2 : 10;
    std::string digits;
    do {
      int d = static_cast<int>(mag % static_cast<uint64_t>(base));
      digits.push_back(static_cast<char>(d < 10 ? '0' + d : (type == 'X' ? 'A' : 'a') + d - 10));
      mag /= static_cast<uint64_t>(base);
    } while (mag);
    if (spec.grouping && base == 10)
      for (size_t i = 3; i < digits.size(); i += 4) digits.insert(i, 1, ',');
    std::reverse(digits.begin(), digits.end());
    if (spec.alternate && base != 10) digits = std::string("0") + (base == 16 ? type : base == 8 ? 'o' : 'b') + digits;
    body = (x < 0 ? "-" : spec.sign == '+' ? "+" : spec.sign == ' ' ? " " : "") + digits;
    return pad(body, spec, '>');
  }
  double x = v.as_float();
  if (type == 0 && spec.precision < 0) {
    body = v.is_float() ? python_float_repr(x) : std::to_string(v.as_int());
  } else {
    char t = type == 0 ? 'g' : type == '%' ? 'f' : type;
    if (t != 'f' && t != 'F' && t != 'e' && t != 'E' && t != 'g' && t != 'G')
      fail("ValueError", std::string("Unknown format code '") + type + "' for object of type '" + v.type_name() + "'");
    double shown = type == '%' ? x * 100 : x;
    int precision = spec.precision < 0 ? 6 : spec.precision;
    char fmt[16];
    std::snprintf(fmt, sizeof fmt, "%%%s.%d%c", spec.alternate ? "#" : "", precision, t);
    char buf[512];
    std::snprintf(buf, sizeof buf, fmt, shown);
    body = buf;
    if (type == 0 && body.find_first_of(".eEn") == std::string::npos) body += ".0";  // general format keeps a float a float
    if (type == '%') body += "%";
    if (spec.sign == '+' && x >= 0) body = "+" + body;
    else if (spec.sign == ' ' && x >= 0) body = " " + body;
  }
  return pad(body, spec, '>');
}

std::string format_value(const Value& v, const std::string& spec_text) {
  if (spec_text.empty()) return v.to_str();
  Spec spec = parse_spec(spec_text);
  if (v.is_number()) {
    if (spec.type == 's') fail("ValueError", "Unknown format code 's' for object of type '" + v.type_name() + "'");
    return format_number(v, spec);
  }
  if (v.is_string()) {
    if (spec.type && spec.type != 's') fail("ValueError", std::string("Unknown format code '") + spec.type + "' for object of type 'str'");
    std::string s = v.str();
    if (spec.precision >= 0) {
      U32 cps = to_code_points(s);
      if (cps.size() > static_cast<size_t>(spec.precision)) s = from_code_points(std::u32string_view(cps).substr(0, static_cast<size_t>(spec.precision)));
    }
    return pad(s, spec, '<');
  }
  type_error("unsupported format string passed to " + v.type_name() + ".__format__");
}

std::string str_format(const std::string& format, CallArgs& args) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < format.size(); ++i) {
    char c = format[i];
    if (c == '}') {
      if (i + 1 < format.size() && format[i + 1] == '}') { out.push_back('}'); ++i; continue; }
      fail("ValueError", "Single '}' encountered in format string");
    }
    if (c != '{') { out.push_back(c); continue; }
    if (i + 1 < format.size() && format[i + 1] == '{') { out.push_back('{'); ++i; continue; }
    size_t close = format.find('}', i);
    if (close == std::string::npos) fail("ValueError", "Single '{' encountered in format string");
    std::string field = format.substr(i + 1, close - i - 1);
    i = close;
    std::string spec, conversion;
    if (size_t colon = field.find(':'); colon != std::string::npos) { spec = field.substr(colon + 1); field.resize(colon); }
    if (size_t bang = field.find('!'); bang != std::string::npos) { conversion = field.substr(bang + 1); field.resize(bang); }
    size_t name_end = field.find_first_of(".[");
    std::string head = field.substr(0, name_end);
    Value v;
    if (head.empty()) {
      if (auto_index >= args.positional.size()) fail("IndexError", "Replacement index " + std::to_string(auto_index) + " out of range for positional args tuple");
      v = args.positional[auto_index++];
    } else if (std::all_of(head.begin(), head.end(), [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); })) {
      const auto idx = static_cast<size_t>(parse_digits(head));
      if (idx >= args.positional.size()) fail("IndexError", "Replacement index " + head + " out of range for positional args tuple");
      v = args.positional[idx];
    } else {
      bool found = false;
      for (auto& [k, kv] : args.keyword)
        if (k == head) { v = kv; found = true; }
      if (!found) fail("KeyError", "'" + head + "'");
    }
    for (size_t p = name_end; p != std::string::npos && p < field.size();) {
      if (field[p] == '.') {
        size_t e = field.find_first_of(".[", p + 1);
        v = get_attribute(v, field.substr(p + 1, e == std::string::npos ? std::string::npos : e - p - 1));
        p = e;
      } else {
        size_t e = field.find(']', p);
        if (e == std::string::npos) fail("ValueError", "Missing ']' in format string");
        std::string key = field.substr(p + 1, e - p - 1);
        bool digits = !key.empty() && std::all_of(key.begin(), key.end(), [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); });
        v = get_item(v, digits ? Value(parse_digits(key)) : Value(key));
        p = e + 1;
      }
    }
    if (conversion == "r" || conversion == "a") v = Value(v.repr());
    else if (conversion == "s") v = Value(v.to_str());
    out += format_value(v, spec);
  }
  return out;
}

}  // namespace

std::string percent_format(const std::string& format, const Value& args) {
  std::vector<Value> values;
  const Dict* mapping = args.is_dict() ? &args.dict() : nullptr;
  if (args.is_tuple()) values = args.list().items;
  else values.push_back(args);
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') { out.push_back(format[i]); continue; }
    if (++i >= format.size()) fail("ValueError", "incomplete format");
    Value v;
    bool have = false;
    if (format[i] == '(') {
      size_t close = format.find(')', i);
      if (close == std::string::npos || !mapping) fail("ValueError", "incomplete format key");
      const Value* found = mapping->find(std::string_view(format).substr(i + 1, close - i - 1));
      if (!found) fail("KeyError", format.substr(i + 1, close - i - 1));
      v = *found;
      have = true;
      i = close + 1;
    }
    std::string flags;
    while (i < format.size() && std::strchr("-+ #0", format[i])) flags.push_back(format[i++]);
    std::string width, precision;
    while (i < format.size() && std::isdigit(static_cast<unsigned char>(format[i]))) width.push_back(format[i++]);
    if (i < format.size() && format[i] == '.') {
      ++i;
      precision = "0";
      while (i < format.size() && std::isdigit(static_cast<unsigned char>(format[i]))) precision.push_back(format[i++]);
    }
    if (i >= format.size()) fail("ValueError", "incomplete format");
    char type = format[i];
    if (type == '%') { out.push_back('%'); continue; }
    if (!have) {
      if (next >= values.size()) type_error("not enough arguments for format string");
      v = values[next++];
    }
    Spec spec;
    if (!width.empty()) spec.width = static_cast<int>(checked_width(parse_digits(width)));
    if (!precision.empty()) spec.precision = static_cast<int>(checked_width(parse_digits(precision)));
    spec.align = flags.find('-') != std::string::npos ? '<' : 0;
    spec.zero = flags.find('0') != std::string::npos;
    if (flags.find('+') != std::string::npos) spec.sign = '+';
    else if (flags.find(' ') != std::string::npos) spec.sign = ' ';
    if (type == 's' || type == 'r' || type == 'a') {
      std::string s = type == 's' ? v.to_str() : v.repr();
      if (spec.precision >= 0) s = from_code_points(std::u32string_view(to_code_points(s)).substr(0, static_cast<size_t>(spec.precision)));
      spec.precision = -1;
      out += pad(s, spec, '>');
      continue;
    }
    if (!v.is_number()) type_error(std::string("%") + type + " format: a real number is required, not " + v.type_name());
    if (type == 'd' || type == 'i' || type == 'u') {
      spec.type = 'd';
      out += format_number(v.is_float() ? Value(float_to_int(v.as_float())) : v, spec);
    } else if (std::strchr("xXoc", type)) {
      spec.type = type;
      out += format_number(v, spec);
    } else if (std::strchr("eEfFgG", type)) {
      spec.type = type;
      if (spec.precision < 0) spec.precision = 6;
      out += format_number(Value(v.as_float()), spec);
    } else {
      fail("ValueError", std::string("unsupported format character '") + type + "'");
    }
  }
  if (!mapping && next < values.size()) type_error("not all arguments converted during string formatting");
  return out;
}

std::vector<Value> iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Undefined: return {};
    case Value::Kind::List: return v.list().items;
    case Value::Kind::Dict: {
      std::vector<Value> keys;
      keys.reserve(v.dict().items.size());
      for (const auto& [k, x] : v.dict().items) keys.push_back(k);
      return keys;
    }
    case Value::Kind::String: {
      std::vector<Value> chars;
      const std::string& s = v.str();
      for (size_t i = 0; i < s.size();) {
        size_t start = i;
        tok::utf8_next(s, i);
        chars.emplace_back(s.substr(start, i - start));
      }
      return chars;
    }
    default: type_error("'" + v.type_name() + "' object is not iterable");
  }
}

namespace {

// ---- methods ----

class BoundMethod final : public Object {
 public:
  BoundMethod(Value self, std::string name) : self_(std::move(self)), name_(std::move(name)) {}
  std::string type_name() const override { return "builtin_function_or_method"; }
  std::string repr() const override { return "<built-in method " + name_ + " of " + self_.type_name() + " object>"; }
  bool callable() const override { return true; }
  Value call(Interpreter& interp, CallArgs& args) override {
    Value result;
    call_method(interp, self_, name_, method_kinds(name_), args, result);
    return result;
  }

 private:
  Value self_;
  std::string name_;
};

}  // namespace

// Which receivers have a method of a given name (the bits of MethodOf).
enum MethodOf : uint8_t { kStr = 1, kList = 2, kDict = 4, kListMutator = 8, kDictMutator = 16 };
uint8_t method_kinds(const std::string& name) {
  static const std::unordered_map<std::string_view, uint8_t> table = [] {
    std::unordered_map<std::string_view, uint8_t> t;
    for (std::string_view n : {"split", "rsplit", "splitlines", "strip", "lstrip", "rstrip", "startswith", "endswith",
                               "replace", "upper", "lower", "title", "capitalize", "swapcase", "casefold", "format",
                               "find", "rfind", "index", "rindex", "count", "join", "isdigit", "isdecimal",
                               "isnumeric", "isalpha", "isalnum", "isspace", "islower", "isupper", "istitle",
                               "removeprefix", "removesuffix", "zfill", "center", "ljust", "rjust", "partition",
                               "rpartition", "expandtabs"})
      t[n] |= kStr;
    for (std::string_view n : {"index", "count", "copy"}) t[n] |= kList;
    for (std::string_view n : {"get", "items", "keys", "values", "copy"}) t[n] |= kDict;
    for (std::string_view n : {"append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse"}) t[n] |= kListMutator;
    for (std::string_view n : {"update", "pop", "popitem", "setdefault", "clear"}) t[n] |= kDictMutator;
    return t;
  }();
  auto it = table.find(name);
  return it == table.end() ? 0 : it->second;
}

namespace {

bool is_mutator(const Value& self, uint8_t kinds) {
  return (self.is_list() && !self.is_generator() && (kinds & kListMutator)) || (self.is_dict() && (kinds & kDictMutator));
}

// The method kind `self` would use, or 0.
uint8_t method_of(const Value& self, uint8_t kinds) {
  if (self.is_string()) return kinds & kStr;
  if (self.is_list() && !self.is_generator()) return kinds & kList;
  if (self.is_dict()) return kinds & kDict;
  return 0;
}

[[noreturn]] void unsafe(const Value& self, const std::string& name) {
  fail("SecurityError", "access to attribute '" + name + "' of '" + self.type_name() + "' object is unsafe.");
}

bool starts_or_ends(const std::string& s, const Value& affix, bool ends, const char* method) {
  auto test = [&](const Value& a) {
    const std::string& x = need_str(a, method);
    if (x.size() > s.size()) return false;
    return ends ? s.compare(s.size() - x.size(), x.size(), x) == 0 : s.compare(0, x.size(), x) == 0;
  };
  if (affix.is_tuple()) {
    for (const auto& a : affix.list().items)
      if (test(a)) return true;
    return false;
  }
  if (!affix.is_string())
    type_error(std::string(method) + " first arg must be str or a tuple of str, not " + affix.type_name());
  return test(affix);
}

// Code-point range [start, end) of s for find / count / startswith with start and end.
int64_t find_cp(const std::string& s, const std::string& sub, bool reverse) {
  size_t p = reverse ? s.rfind(sub) : s.find(sub);
  if (p == std::string::npos) return -1;
  return static_cast<int64_t>(code_point_count(std::string_view(s).substr(0, p)));
}

Value str_method(Interpreter&, const std::string& s, const std::string& name, CallArgs& a) {
  auto done = [&](size_t n) { a.expect_consumed(name, n); };
  if (name == "split" || name == "rsplit") {
    Value sep = a.take(0, "sep", Value::none());
    int64_t maxsplit = need_int(a.take(1, "maxsplit", Value(int64_t{-1})), "maxsplit");
    done(2);
    return make_list(str_split(s, sep, maxsplit, name == "rsplit"));
  }
  if (name == "splitlines") {
    bool keepends = a.take(0, "keepends", Value(false)).truthy();
    done(1);
    std::vector<Value> out;
    for (auto& l : split_lines(s, keepends)) out.emplace_back(std::move(l));
    return make_list(std::move(out));
  }
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    Value chars = a.take(0, "chars", Value::none());
    done(1);
    return Value(str_strip(s, chars, name != "rstrip", name != "lstrip"));
  }
  if (name == "startswith" || name == "endswith") {
    Value affix = a.take(0, "prefix");
    done(1);
    if (affix.is_undefined() && !affix.undefined_info()) type_error(name + "() takes at least 1 argument (0 given)");
    return Value(starts_or_ends(s, affix, name == "endswith", name.c_str()));
  }
  if (name == "replace") {
    const std::string& old = need_str(a.take(0, "old"), "replace() argument 1");
    const std::string& with = need_str(a.take(1, "new"), "replace() argument 2");
    int64_t count = need_int(a.take(2, "count", Value(int64_t{-1})), "count");
    done(3);
    return Value(str_replace(s, old, with, count));
  }
  if (name == "upper" || name == "lower" || name == "casefold") {
    done(0);
    return Value(name == "upper" ? str_upper(s) : name == "lower" ? str_lower(s) : str_casefold(s));
  }
  if (name == "expandtabs") {
    int64_t size = checked_width(need_int(a.take(0, "tabsize", Value(int64_t{8})), "tabsize"));
    done(1);
    std::string out;
    int64_t column = 0;
    for (size_t i = 0; i < s.size();) {
      size_t start = i;
      char32_t c = tok::utf8_next(s, i);
      if (c == U'\t') {
        int64_t spaces = size > 0 ? size - column % size : 0;
        out.append(static_cast<size_t>(spaces), ' ');
        column += spaces;
      } else {
        out.append(s, start, i - start);
        column = c == U'\n' || c == U'\r' ? 0 : column + 1;
      }
    }
    return Value(std::move(out));
  }
  if (name == "title") { done(0); return Value(str_title(s)); }
  if (name == "capitalize") { done(0); return Value(str_capitalize(s)); }
  if (name == "swapcase") {
    done(0);
    return Value(map_chars(s, [](char32_t c) { return is_cased_upper(c) ? lower(c) : is_cased_lower(c) ? upper(c) : c; }));
  }
  if (name == "format") return Value(str_format(s, a));
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex") {
    const std::string& sub = need_str(a.take(0, "sub"), "argument");
    done(1);
    int64_t r = find_cp(s, sub, name[0] == 'r');
    if (r < 0 && (name == "index" || name == "rindex")) fail("ValueError", "substring not found");
    return Value(r);
  }
  if (name == "count") {
    const std::string& sub = need_str(a.take(0, "sub"), "argument");
    done(1);
    if (sub.empty()) return Value(static_cast<int64_t>(code_point_count(s) + 1));
    int64_t n = 0;
    for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
    return Value(n);
  }
  if (name == "join") {
    Value items = a.take(0, "iterable");
    done(1);
    std::string out;
    bool first = true;
    for (const auto& v : iterate(items)) {
      if (!v.is_string()) type_error("sequence item: expected str instance, " + v.type_name() + " found");
      if (!first) out += s;
      first = false;
      out += v.str();
    }
    return Value(std::move(out));
  }
  if (name.rfind("is", 0) == 0) {
    done(0);
    U32 cps = to_code_points(s);
    if (name == "istitle") {
      bool cased = false, previous_cased = false;
      for (char32_t c : cps) {
        if (is_cased_upper(c) || utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_LT) {
          if (previous_cased) return Value(false);
          previous_cased = cased = true;
        } else if (is_cased_lower(c)) {
          if (!previous_cased) return Value(false);
          previous_cased = cased = true;
        } else {
          previous_cased = false;
        }
      }
      return Value(cased);
    }
    if (name == "islower" || name == "isupper") {
      bool any = false;
      for (char32_t c : cps) {
        if (name == "islower" ? is_cased_upper(c) : is_cased_lower(c)) return Value(false);
        any = any || is_cased(c);
      }
      return Value(any);
    }
    if (cps.empty()) return Value(false);
    for (char32_t c : cps) {
      bool ok = name == "isspace" ? python_isspace(c)
                : name == "isalpha" ? is_alpha(c)
                : name == "isalnum" ? is_alpha(c) || is_decimal(c)
                                    : is_decimal(c);  // isdigit / isdecimal / isnumeric
      if (!ok) return Value(false);
    }
    return Value(true);
  }
  if (name == "removeprefix" || name == "removesuffix") {
    const std::string& x = need_str(a.take(0, "affix"), name.c_str());
    done(1);
    if (name == "removeprefix") return Value(s.compare(0, x.size(), x) == 0 ? s.substr(x.size()) : s);
    return Value(x.size() <= s.size() && s.compare(s.size() - x.size(), x.size(), x) == 0 ? s.substr(0, s.size() - x.size()) : s);
  }
  if (name == "zfill" || name == "center" || name == "ljust" || name == "rjust") {
    int64_t width = checked_width(need_int(a.take(0, "width"), "width"));
    std::string fill = name == "zfill" ? "0" : need_str(a.take(1, "fillchar", Value(" ")), "fillchar");
    done(name == "zfill" ? 1 : 2);
    if (code_point_count(fill) != 1) type_error("The fill character must be exactly one character long");
    int64_t len = static_cast<int64_t>(code_point_count(s));
    if (width <= len) return Value(s);
    size_t n = static_cast<size_t>(width - len);
    auto repeat = [&](size_t k) { std::string r; for (size_t i = 0; i < k; ++i) r += fill; return r; };
    if (name == "ljust") return Value(s + repeat(n));
    if (name == "rjust") return Value(repeat(n) + s);
    if (name == "zfill") {
      size_t sign = !s.empty() && (s[0] == '+' || s[0] == '-') ? 1 : 0;
      return Value(s.substr(0, sign) + repeat(n) + s.substr(sign));
    }
    size_t left = n / 2 + (n & static_cast<size_t>(width) & 1);  // CPython's centering rule
    return Value(repeat(left) + s + repeat(n - left));
  }
  if (name == "partition" || name == "rpartition") {
    const std::string& sep = need_str(a.take(0, "sep"), "sep");
    done(1);
    if (sep.empty()) fail("ValueError", "empty separator");
    size_t p = name == "partition" ? s.find(sep) : s.rfind(sep);
    if (p == std::string::npos)
      return make_list(name == "partition" ? std::vector<Value>{Value(s), Value(""), Value("")}
                                           : std::vector<Value>{Value(""), Value(""), Value(s)},
                       List::Shape::Tuple);
    return make_list({Value(s.substr(0, p)), Value(sep), Value(s.substr(p + sep.size()))}, List::Shape::Tuple);
  }
  type_error("'str' object has no attribute '" + name + "'");
}

Value list_method(const Value& self, const std::string& name, CallArgs& a) {
  const auto& items = self.list().items;
  if (name == "copy") { a.expect_consumed(name, 0); return make_list(items); }
  Value x = a.take(0, "value");
  a.expect_consumed(name, 1);
  int64_t count = 0;
  for (size_t i = 0; i < items.size(); ++i)
    if (equals(items[i], x)) {
      if (name == "index") return Value(static_cast<int64_t>(i));
      ++count;
    }
  if (name == "index") fail("ValueError", x.repr() + " is not in list");
  return Value(count);
}

Value dict_method(const Value& self, const std::string& name, CallArgs& a) {
  const Dict& d = self.dict();
  if (name == "get") {
    Value key = a.take(0, "key");
    Value fallback = a.take(1, "default", Value::none());
    a.expect_consumed(name, 2);
    const Value* v = d.find(key);
    return v ? *v : fallback;
  }
  a.expect_consumed(name, 0);
  if (name == "copy") return self;
  std::vector<Value> out;
  for (const auto& [k, v] : d.items) {
    if (name == "items") out.push_back(make_list({k, v}, List::Shape::Tuple));
    else out.push_back(name == "keys" ? k : v);
  }
  return generator(std::move(out));  // dict views: iterable, not JSON, not indexable
}

}  // namespace

Value method_attribute(const Value& self, const std::string& name, uint8_t kinds) {
  if (!kinds) return Value();
  if (is_mutator(self, kinds))
    return Value::undefined("access to attribute '" + name + "' of '" + self.type_name() + "' object is unsafe.", true);
  if (!method_of(self, kinds)) return Value();
  return Value(std::make_shared<BoundMethod>(self, name));
}

bool call_method(Interpreter& interp, const Value& self, const std::string& name, uint8_t kinds, CallArgs& args,
                 Value& result) {
  if (is_mutator(self, kinds)) unsafe(self, name);
  switch (method_of(self, kinds)) {
    case kStr: result = str_method(interp, self.str(), name, args); return true;
    case kList: result = list_method(self, name, args); return true;
    case kDict: result = dict_method(self, name, args); return true;
    default: return false;
  }
}

namespace {

// ---- attribute paths (make_attrgetter) ----

std::vector<Value> attribute_parts(const Value& attribute) {
  if (attribute.is_none() || attribute.is_undefined()) return {};
  if (!attribute.is_string()) return {attribute};
  std::vector<Value> parts;
  for (auto& p : str_split(attribute.str(), Value("."), -1, false)) {
    const std::string& s = p.str();
    bool digits = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
    parts.push_back(digits ? Value(parse_digits(s)) : p);
  }
  return parts;
}

Value lookup_path(Value item, const std::vector<Value>& parts, const Value& fallback = Value::none()) {
  for (const auto& part : parts) {
    item = get_item(item, part);
    if (!fallback.is_none() && item.is_undefined()) item = fallback;
  }
  return item;
}

Value ignore_case(const Value& v) { return v.is_string() ? Value(str_lower(v.str())) : v; }

Value sort_key(const Value& item, const std::vector<std::vector<Value>>& paths, bool case_sensitive) {
  auto one = [&](const std::vector<Value>& parts) {
    Value v = lookup_path(item, parts);
    return case_sensitive ? v : ignore_case(v);
  };
  if (paths.size() <= 1) return one(paths.empty() ? std::vector<Value>{} : paths.front());
  std::vector<Value> keys;
  for (const auto& p : paths) keys.push_back(one(p));
  return make_list(std::move(keys));
}

std::vector<std::vector<Value>> multi_attribute(const Value& attribute) {
  std::vector<std::vector<Value>> paths;
  if (attribute.is_string()) {
    for (const auto& part : str_split(attribute.str(), Value(","), -1, false)) paths.push_back(attribute_parts(part));
  } else if (!attribute.is_none() && !attribute.is_undefined()) {
    paths.push_back({attribute});
  }
  return paths;
}

std::vector<Value> sorted(std::vector<Value> items, const std::vector<std::vector<Value>>& paths, bool case_sensitive, bool reverse) {
  std::vector<std::pair<Value, Value>> keyed;
  keyed.reserve(items.size());
  for (auto& v : items) keyed.emplace_back(sort_key(v, paths, case_sensitive), std::move(v));
  // Python's sort is stable and reverse=True keeps equal items in their original order.
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    return reverse ? compare(y.first, x.first) < 0 : compare(x.first, y.first) < 0;
  });
  std::vector<Value> out;
  out.reserve(keyed.size());
  for (auto& [k, v] : keyed) out.push_back(std::move(v));
  return out;
}

// ---- filters ----

#define FILTER(name) Value filter_##name(Interpreter& interp, const Value& v, CallArgs& a)

FILTER(abs) {
  (void)interp;
  a.expect_consumed("abs", 0);
  if (v.is_undefined()) v.fail_undefined();
  if (v.is_float()) return Value(std::fabs(v.as_float()));
  if (v.is_number()) return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
  type_error("bad operand type for abs(): '" + v.type_name() + "'");
}

FILTER(attr) {
  (void)interp;
  Value name = a.take(0, "name");
  a.expect_consumed("attr", 1);
  const std::string& n = need_str(name, "attribute name");
  if (v.is_undefined()) v.fail_undefined();
  if (!n.empty() && n[0] == '_') return Value::undefined("access to attribute '" + n + "' is unsafe.", true);
  if (v.is_object()) return v.object().attribute(n);
  return method_attribute(v, n, method_kinds(n));
}

FILTER(batch) {
  (void)interp;
  int64_t count = need_int(a.take(0, "linecount"), "linecount");
  Value fill = a.take(1, "fill_with", Value::none());
  a.expect_consumed("batch", 2);
  if (count <= 0) fail("ValueError", "batch size must be positive");
  std::vector<Value> out, current;
  for (auto& item : iterate(v)) {
    if (static_cast<int64_t>(current.size()) == count) { out.push_back(make_list(std::move(current))); current.clear(); }
    current.push_back(std::move(item));
  }
  if (!current.empty()) {
    if (!fill.is_none())
      while (static_cast<int64_t>(current.size()) < count) current.push_back(fill);
    out.push_back(make_list(std::move(current)));
  }
  return generator(std::move(out));
}

FILTER(capitalize) { (void)interp; a.expect_consumed("capitalize", 0); return Value(str_capitalize(soft_str(v))); }

FILTER(center) {
  (void)interp;
  Value width = a.take(0, "width", Value(int64_t{80}));
  a.expect_consumed("center", 1);
  CallArgs m;
  m.positional.push_back(width);
  return str_method(interp, soft_str(v), "center", m);
}

FILTER(default) {
  (void)interp;
  Value fallback = a.take(0, "default_value", Value(""));
  bool boolean = a.take(1, "boolean", Value(false)).truthy();
  a.expect_consumed("default", 2);
  if (v.is_undefined() || (boolean && !v.truthy())) return fallback;
  return v;
}

FILTER(dictsort) {
  (void)interp;
  bool case_sensitive = a.take(0, "case_sensitive", Value(false)).truthy();
  Value by = a.take(1, "by", Value("key"));
  bool reverse = a.take(2, "reverse", Value(false)).truthy();
  a.expect_consumed("dictsort", 3);
  if (v.is_undefined()) v.fail_undefined();
  if (!v.is_dict()) type_error("'" + v.type_name() + "' object has no attribute 'items'");
  int64_t pos;
  if (by.is_string() && by.str() == "key") pos = 0;
  else if (by.is_string() && by.str() == "value") pos = 1;
  else fail("FilterArgumentError", "You can only sort by either \"key\" or \"value\"");
  std::vector<Value> pairs;
  for (const auto& [k, x] : v.dict().items) pairs.push_back(make_list({k, x}, List::Shape::Tuple));
  return make_list(sorted(std::move(pairs), {{Value(pos)}}, case_sensitive, reverse));
}

FILTER(escape) {
  (void)interp;
  a.expect_consumed("escape", 0);
  return v.is_markup() ? v : Value::markup(html_escape(soft_str(v)));
}
FILTER(forceescape) {
  (void)interp;
  a.expect_consumed("forceescape", 0);
  return Value::markup(html_escape(soft_str(v)));
}

FILTER(first) {
  (void)interp;
  a.expect_consumed("first", 0);
  std::vector<Value> items = iterate(v);
  if (items.empty()) return Value::undefined("No first item, sequence was empty.");
  return items.front();
}

FILTER(last) {
  (void)interp;
  a.expect_consumed("last", 0);
  if (v.is_generator()) type_error("'generator' object is not reversible");
  std::vector<Value> items = iterate(v);
  if (items.empty()) return Value::undefined("No last item, sequence was empty.");
  return items.back();
}

std::optional<double> parse_python_float(std::string s) {
  s = std::string(str_strip(s, Value::none(), true, true));
  s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
  if (s.empty()) return std::nullopt;
  std::string lower_s = str_lower(s);
  std::string body = lower_s[0] == '+' || lower_s[0] == '-' ? lower_s.substr(1) : lower_s;
  if (body == "inf" || body == "infinity" || body == "nan") {
    double x = body == "nan" ? NAN : INFINITY;
    return lower_s[0] == '-' ? -x : x;
  }
  if (!std::all_of(body.begin(), body.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)) || c == '.' || c == 'e' || c == '+' || c == '-'; }))
    return std::nullopt;
  char* end = nullptr;
  double x = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size()) return std::nullopt;
  return x;
}

FILTER(float) {
  (void)interp;
  Value fallback = a.take(0, "default", Value(0.0));
  a.expect_consumed("float", 1);
  if (v.is_undefined()) v.fail_undefined();  // float(Undefined) raises
  if (v.is_number()) return Value(v.as_float());
  if (v.is_string())
    if (auto x = parse_python_float(v.str())) return Value(*x);
  return fallback;
}

FILTER(int) {
  (void)interp;
  Value fallback = a.take(0, "default", Value(int64_t{0}));
  int64_t base = need_int(a.take(1, "base", Value(int64_t{10})), "base");
  a.expect_consumed("int", 2);
  if (v.is_undefined()) v.fail_undefined();  // int(float(Undefined)) raises
  if (v.is_int() || v.is_bool()) return Value(v.as_int());
  if (v.is_float()) {
    if (!std::isfinite(v.as_float())) return fallback;
    return Value(float_to_int(v.as_float()));
  }
  if (v.is_string()) {
    const std::string_view s = str_strip(v.str(), Value::none(), true, true);
    std::string digits;
    for (char c : s) if (c != '_') digits.push_back(c);
    if (!digits.empty()) {
      size_t start = digits[0] == '+' || digits[0] == '-' ? 1 : 0;
      std::string body = digits.substr(start);
      int b = static_cast<int>(base);
      if (body.size() > 2 && body[0] == '0' && std::strchr("xXoObB", body[1])) {
        int prefix_base = std::tolower(static_cast<unsigned char>(body[1])) == 'x' ? 16 : std::tolower(static_cast<unsigned char>(body[1])) == 'o' ? 8 : 2;
        if (b == prefix_base || b == 0) { b = prefix_base; body = body.substr(2); }
      }
      if (b == 0) b = 10;
      if (!body.empty() && b >= 2 && b <= 36) {
        errno = 0;
        char* end = nullptr;
        long long x = std::strtoll(body.c_str(), &end, b);
        if (errno == 0 && end == body.c_str() + body.size() && std::isalnum(static_cast<unsigned char>(body[0])))
          return Value(static_cast<int64_t>(digits[0] == '-' ? -x : x));
      }
    }
    if (auto x = parse_python_float(v.str()); x && std::isfinite(*x)) return Value(float_to_int(*x));
  }
  return fallback;
}

FILTER(indent) {
  (void)interp;
  Value width = a.take(0, "width", Value(int64_t{4}));
  bool first = a.take(1, "first", Value(false)).truthy();
  bool blank = a.take(2, "blank", Value(false)).truthy();
  a.expect_consumed("indent", 3);
  std::string indention =
      width.is_string() ? width.str() : std::string(static_cast<size_t>(std::max<int64_t>(0, checked_width(need_int(width, "width")))), ' ');
  if (v.is_undefined()) v.fail_undefined();
  if (!v.is_string()) type_error("unsupported operand type(s) for +=: '" + v.type_name() + "' and 'str'");
  std::vector<std::string> lines = split_lines(v.str() + "\n", false);
  std::string rv;
  if (blank) {
    for (size_t i = 0; i < lines.size(); ++i) rv += (i ? "\n" + indention : "") + lines[i];
  } else {
    rv = lines.empty() ? "" : lines.front();
    for (size_t i = 1; i < lines.size(); ++i) rv += "\n" + (lines[i].empty() ? "" : indention + lines[i]);
  }
  if (first) rv = indention + rv;
  return Value(std::move(rv));
}

FILTER(items) {
  (void)interp;
  a.expect_consumed("items", 0);
  if (v.is_undefined()) return generator({});
  if (!v.is_dict()) type_error("Can only get item pairs from a mapping.");
  std::vector<Value> out;
  for (const auto& [k, x] : v.dict().items) out.push_back(make_list({k, x}, List::Shape::Tuple));
  return generator(std::move(out));
}

FILTER(join) {
  (void)interp;
  Value d = a.take(0, "d", Value(""));
  Value attribute = a.take(1, "attribute", Value::none());
  a.expect_consumed("join", 2);
  std::string sep = soft_str(d), out;
  auto parts = attribute_parts(attribute);
  bool first = true;
  for (const auto& item : iterate(v)) {
    if (!first) out += sep;
    first = false;
    lookup_path(item, parts).append_str(out);
  }
  return Value(std::move(out));
}

FILTER(length) { (void)interp; a.expect_consumed("length", 0); return Value(static_cast<int64_t>(python_len(v))); }

FILTER(list) {
  (void)interp;
  a.expect_consumed("list", 0);
  return make_list(iterate(v));
}

FILTER(lower) { (void)interp; a.expect_consumed("lower", 0); return Value(str_lower(soft_str(v))); }
FILTER(upper) { (void)interp; a.expect_consumed("upper", 0); return Value(str_upper(soft_str(v))); }

FILTER(map) {
  if (!v.truthy()) return generator({});
  std::vector<Value> out;
  if (a.positional.empty() && std::any_of(a.keyword.begin(), a.keyword.end(), [](auto& k) { return k.first == "attribute"; })) {
    Value attribute = a.take(99, "attribute");
    Value fallback = a.take(99, "default", Value::none());
    if (!a.keyword.empty()) fail("FilterArgumentError", "Unexpected keyword argument '" + a.keyword.front().first + "'");
    auto parts = attribute_parts(attribute);
    for (const auto& item : iterate(v)) out.push_back(lookup_path(item, parts, fallback));
    return generator(std::move(out));
  }
  if (a.positional.empty()) fail("FilterArgumentError", "map requires a filter argument");
  const std::string& name = need_str(a.positional.front(), "filter name");
  FilterFn fn = find_filter(name);
  if (!fn) fail("TemplateRuntimeError", "No filter named '" + name + "'.");
  for (const auto& item : iterate(v)) {
    CallArgs rest;
    rest.positional.assign(a.positional.begin() + 1, a.positional.end());
    rest.keyword = a.keyword;
    out.push_back(fn(interp, item, rest));
  }
  return generator(std::move(out));
}

Value min_or_max(const Value& v, CallArgs& a, bool max, const char* name) {
  bool case_sensitive = a.take(0, "case_sensitive", Value(false)).truthy();
  Value attribute = a.take(1, "attribute", Value::none());
  a.expect_consumed(name, 2);
  std::vector<Value> items = iterate(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  auto paths = attribute.is_none() ? std::vector<std::vector<Value>>{} : std::vector<std::vector<Value>>{attribute_parts(attribute)};
  size_t best = 0;
  Value best_key = sort_key(items[0], paths, case_sensitive);
  for (size_t i = 1; i < items.size(); ++i) {
    Value k = sort_key(items[i], paths, case_sensitive);
    if (max ? compare(k, best_key) > 0 : compare(k, best_key) < 0) { best = i; best_key = k; }
  }
  return items[best];
}
FILTER(max) { (void)interp; return min_or_max(v, a, true, "max"); }
FILTER(min) { (void)interp; return min_or_max(v, a, false, "min"); }

FILTER(replace) {
  (void)interp;
  Value old = a.take(0, "old"), with = a.take(1, "new"), count = a.take(2, "count", Value::none());
  a.expect_consumed("replace", 3);
  return Value(str_replace(v.to_str(), old.to_str(), with.to_str(), count.is_none() ? -1 : need_int(count, "count")));
}

FILTER(reverse) {
  (void)interp;
  a.expect_consumed("reverse", 0);
  if (v.is_string()) {
    U32 cps = to_code_points(v.str());
    std::reverse(cps.begin(), cps.end());
    return Value(from_code_points(cps));
  }
  std::vector<Value> items = iterate(v);
  std::reverse(items.begin(), items.end());
  return v.is_list() && !v.is_generator() ? generator(std::move(items)) : make_list(std::move(items));
}

double python_round(double x, int64_t digits) {
  if (!std::isfinite(x)) return x;
  if (digits >= 0) {
    char buf[512];
    std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(std::min<int64_t>(digits, 300)), x);
    return std::strtod(buf, nullptr);
  }
  double scale = std::pow(10.0, static_cast<double>(-digits));
  double y = x / scale, r = std::nearbyint(y);
  return r * scale;
}

FILTER(round) {
  (void)interp;
  int64_t precision = need_int(a.take(0, "precision", Value(int64_t{0})), "precision");
  Value method = a.take(1, "method", Value("common"));
  a.expect_consumed("round", 2);
  std::string m = method.to_str();
  if (m != "common" && m != "ceil" && m != "floor") fail("FilterArgumentError", "method must be common, ceil or floor");
  if (v.is_undefined()) v.fail_undefined();
  if (!v.is_number()) type_error("type " + v.type_name() + " doesn't define __round__ method");
  if (m == "common") {
    if (!v.is_float()) {
      if (precision >= 0) return Value(v.as_int());
      return Value(float_to_int(python_round(static_cast<double>(v.as_int()), precision)));
    }
    return Value(python_round(v.as_float(), precision));
  }
  double scale = std::pow(10.0, static_cast<double>(precision));
  double r = m == "ceil" ? std::ceil(v.as_float() * scale) : std::floor(v.as_float() * scale);
  return Value(r / scale);
}

FILTER(safe) { (void)interp; a.expect_consumed("safe", 0); return Value::markup(soft_str(v)); }
FILTER(string) { (void)interp; a.expect_consumed("string", 0); return v.is_string() ? v : Value(soft_str(v)); }

Value select_or_reject(Interpreter& interp, const Value& v, CallArgs& a, bool select, bool by_attribute) {
  if (!v.truthy()) return generator({});
  std::vector<Value> parts;
  size_t offset = 0;
  if (by_attribute) {
    if (a.positional.empty()) fail("FilterArgumentError", "Missing parameter for attribute name");
    parts = attribute_parts(a.positional[0]);
    offset = 1;
  }
  TestFn test = nullptr;
  std::string test_name;
  if (a.positional.size() > offset) {
    test_name = need_str(a.positional[offset], "test name");
    test = find_test(test_name);
  }
  std::vector<Value> out;
  for (const auto& item : iterate(v)) {
    Value x = by_attribute ? lookup_path(item, parts) : item;
    bool keep;
    if (a.positional.size() > offset) {
      if (!test) fail("TemplateRuntimeError", "No test named '" + test_name + "'.");
      CallArgs rest;
      rest.positional.assign(a.positional.begin() + static_cast<std::ptrdiff_t>(offset) + 1, a.positional.end());
      rest.keyword = a.keyword;
      keep = test(interp, x, rest);
    } else {
      keep = x.truthy();
    }
    if (keep == select) out.push_back(item);
  }
  return generator(std::move(out));
}
FILTER(select) { return select_or_reject(interp, v, a, true, false); }
FILTER(reject) { return select_or_reject(interp, v, a, false, false); }
FILTER(selectattr) { return select_or_reject(interp, v, a, true, true); }
FILTER(rejectattr) { return select_or_reject(interp, v, a, false, true); }

FILTER(sort) {
  (void)interp;
  bool reverse = a.take(0, "reverse", Value(false)).truthy();
  bool case_sensitive = a.take(1, "case_sensitive", Value(false)).truthy();
  Value attribute = a.take(2, "attribute", Value::none());
  a.expect_consumed("sort", 3);
  return make_list(sorted(iterate(v), multi_attribute(attribute), case_sensitive, reverse));
}

FILTER(striptags) {
  (void)interp;
  a.expect_consumed("striptags", 0);
  std::string s = soft_str(v), out;
  bool in_tag = false;
  for (char c : s) {
    if (c == '<') in_tag = true;
    else if (c == '>' && in_tag) in_tag = false;
    else if (!in_tag) out.push_back(c);
  }
  std::vector<Value> words = str_split(out, Value::none(), -1, false);
  std::string joined;
  for (size_t i = 0; i < words.size(); ++i) joined += (i ? " " : "") + words[i].str();
  return Value(joined);
}

FILTER(sum) {
  (void)interp;
  Value attribute = a.take(0, "attribute", Value::none());
  Value total = a.take(1, "start", Value(int64_t{0}));
  a.expect_consumed("sum", 2);
  auto parts = attribute_parts(attribute);
  for (const auto& item : iterate(v)) {
    Value x = lookup_path(item, parts);
    if (x.is_undefined()) x.fail_undefined();
    if (!x.is_number() || !total.is_number())
      type_error("unsupported operand type(s) for +: '" + total.type_name() + "' and '" + x.type_name() + "'");
    total = total.is_float() || x.is_float() ? Value(total.as_float() + x.as_float()) : Value(total.as_int() + x.as_int());
  }
  return total;
}

// Jinja's title filter: words start after -, whitespace, (, {, [ or <.
FILTER(title) {
  (void)interp;
  a.expect_consumed("title", 0);
  U32 cps = to_code_points(soft_str(v));
  bool start = true;
  for (auto& c : cps) {
    bool separator = c == U'-' || python_isspace(c) || c == U'(' || c == U'{' || c == U'[' || c == U'<';
    if (separator) { start = true; continue; }
    c = start ? upper(c) : lower(c);
    start = false;
  }
  return Value(from_code_points(cps));
}

// tojson's arguments: json.dumps' options as transformers passes them.
JsonFormat tojson_format(CallArgs& a) {
  JsonFormat f;
  f.ensure_ascii = a.take(0, "ensure_ascii", Value(false)).truthy();
  Value indent = a.take(1, "indent", Value::none());
  Value separators = a.take(2, "separators", Value::none());
  f.sort_keys = a.take(3, "sort_keys", Value(false)).truthy();
  a.expect_consumed("tojson", 4);
  if (indent.is_string()) f.indent = indent.str();
  else if (indent.is_int() || indent.is_bool())
    f.indent = std::string(static_cast<size_t>(std::max<int64_t>(0, checked_width(indent.as_int()))), ' ');
  else if (!indent.is_none()) type_error("can't multiply sequence by non-int of type '" + indent.type_name() + "'");
  if (f.indent) f.item_separator = ",";
  if (!separators.is_none()) {
    std::vector<Value> parts = iterate(separators);
    if (parts.size() != 2) fail("ValueError", "separators must be an (item_separator, key_separator) pair");
    f.item_separator = need_str(parts[0], "item separator");
    f.key_separator = need_str(parts[1], "key separator");
  }
  return f;
}

FILTER(tojson) {
  (void)interp;
  return Value(to_json(v, tojson_format(a)));
}

void write_tojson(Interpreter&, const Value& v, CallArgs& a, std::string& out) { append_json(out, v, tojson_format(a)); }

FILTER(trim) {
  (void)interp;
  Value chars = a.take(0, "chars", Value::none());
  a.expect_consumed("trim", 1);
  if (v.is_string()) {
    const std::string_view trimmed = str_strip(v.str(), chars, true, true);
    if (trimmed.size() == v.str().size()) return v;  // nothing stripped: the same string, no copy
    return v.is_markup() ? Value::markup(std::string(trimmed)) : Value(trimmed);
  }
  return Value(str_strip(soft_str(v), chars, true, true));
}

FILTER(truncate) {
  (void)interp;
  int64_t length = need_int(a.take(0, "length", Value(int64_t{255})), "length");
  bool killwords = a.take(1, "killwords", Value(false)).truthy();
  std::string end = soft_str(a.take(2, "end", Value("...")));
  Value leeway_v = a.take(3, "leeway", Value::none());
  a.expect_consumed("truncate", 4);
  int64_t leeway = leeway_v.is_none() ? 5 : need_int(leeway_v, "leeway");
  U32 s = to_code_points(soft_str(v));
  int64_t end_len = static_cast<int64_t>(code_point_count(end));
  if (length < end_len) fail("AssertionError", "expected length >= " + std::to_string(end_len) + ", got " + std::to_string(length));
  if (static_cast<int64_t>(s.size()) <= length + leeway) return Value(from_code_points(s));
  U32 head = s.substr(0, static_cast<size_t>(length - end_len));
  if (!killwords) {
    size_t space = head.rfind(U' ');
    if (space != U32::npos) head.resize(space);
  }
  return Value(from_code_points(head) + end);
}

FILTER(unique) {
  (void)interp;
  bool case_sensitive = a.take(0, "case_sensitive", Value(false)).truthy();
  Value attribute = a.take(1, "attribute", Value::none());
  a.expect_consumed("unique", 2);
  auto parts = attribute_parts(attribute);
  std::vector<Value> out, seen;
  for (const auto& item : iterate(v)) {
    Value key = lookup_path(item, parts);
    if (!case_sensitive) key = ignore_case(key);
    if (key.is_list() && !key.is_tuple()) type_error("unhashable type: 'list'");
    if (key.is_dict()) type_error("unhashable type: 'dict'");
    if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equals(s, key); })) {
      seen.push_back(key);
      out.push_back(item);
    }
  }
  return generator(std::move(out));
}

FILTER(wordcount) {
  (void)interp;
  a.expect_consumed("wordcount", 0);
  U32 cps = to_code_points(soft_str(v));
  int64_t n = 0;
  for (size_t i = 0; i < cps.size();) {
    if (!is_word(cps[i])) { ++i; continue; }
    ++n;
    while (i < cps.size() && is_word(cps[i])) ++i;
  }
  return Value(n);
}

FILTER(format) {
  (void)interp;
  if (!a.positional.empty() && !a.keyword.empty())
    fail("FilterArgumentError", "can't handle positional and keyword arguments at the same time");
  Value args;
  if (!a.keyword.empty()) {
    auto d = std::make_shared<Dict>();
    for (auto& [k, x] : a.keyword) d->items.emplace_back(Value(k), x);
    args = Value(std::move(d));
  } else {
    args = make_list(a.positional, List::Shape::Tuple);
  }
  return Value(percent_format(soft_str(v), args));
}


FILTER(slice) {
  (void)interp;
  int64_t slices = need_int(a.take(0, "slices"), "slices");
  Value fill = a.take(1, "fill_with", Value::none());
  a.expect_consumed("slice", 2);
  if (slices <= 0) fail("ZeroDivisionError", "integer division or modulo by zero");
  std::vector<Value> seq = iterate(v), out;
  const int64_t length = static_cast<int64_t>(seq.size()), per = length / slices, extra = length % slices;
  int64_t offset = 0;
  for (int64_t n = 0; n < slices; ++n) {
    int64_t start = offset + n * per;
    if (n < extra) ++offset;
    int64_t end = offset + (n + 1) * per;
    std::vector<Value> part(seq.begin() + start, seq.begin() + end);
    if (!fill.is_none() && n >= extra) part.push_back(fill);
    out.push_back(make_list(std::move(part)));
  }
  return generator(std::move(out));
}

// Sorted by the attribute, one (grouper, list) named tuple per value (case-insensitive by default,
// the grouper spelled as in the group's first item).
FILTER(groupby) {
  (void)interp;
  Value attribute = a.take(0, "attribute");
  Value fallback = a.take(1, "default", Value::none());
  bool case_sensitive = a.take(2, "case_sensitive", Value(false)).truthy();
  a.expect_consumed("groupby", 3);
  auto parts = attribute_parts(attribute);
  auto key = [&](const Value& item) {
    Value k = lookup_path(item, parts, fallback);
    return case_sensitive ? k : ignore_case(k);
  };
  std::vector<Value> items = iterate(v);
  std::vector<std::pair<Value, Value>> keyed;
  for (auto& item : items) keyed.emplace_back(key(item), item);
  std::stable_sort(keyed.begin(), keyed.end(), [](const auto& x, const auto& y) { return compare(x.first, y.first) < 0; });
  std::vector<Value> groups;
  for (size_t i = 0; i < keyed.size();) {
    size_t j = i;
    std::vector<Value> members;
    while (j < keyed.size() && equals(keyed[j].first, keyed[i].first)) members.push_back(keyed[j++].second);
    auto group = std::make_shared<List>();
    group->items = {lookup_path(members.front(), parts, fallback), make_list(std::move(members))};
    group->shape = List::Shape::Tuple;
    group->group = true;
    groups.emplace_back(std::move(group));
    i = j;
  }
  return make_list(std::move(groups));
}

FILTER(xmlattr) {
  (void)interp;
  bool autospace = a.take(0, "autospace", Value(true)).truthy();
  a.expect_consumed("xmlattr", 1);
  if (!v.is_dict()) type_error("'" + v.type_name() + "' object has no attribute 'items'");
  std::string out;
  for (const auto& [k, x] : v.dict().items) {
    if (x.is_none() || x.is_undefined()) continue;
    const std::string key = k.to_str();
    for (size_t i = 0; i < key.size();) {
      size_t at = i;
      char32_t c = tok::utf8_next(key, i);
      if (python_isspace(c) || c == U'/' || c == U'>' || c == U'=')
        fail("ValueError", "Invalid character in attribute name: " + k.repr());
      (void)at;
    }
    if (!out.empty()) out += " ";
    out += html_escape(key) + "=\"" + html_escape(x.to_str()) + "\"";
  }
  if (autospace && !out.empty()) out = " " + out;
  return Value(std::move(out));
}

// urllib.parse.quote: unreserved characters and `safe` stay, the rest is %XX of the UTF-8 bytes.
std::string url_quote(const std::string& s, bool for_query) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '_' || c == '.' || c == '-' || c == '~' || (c == '/' && !for_query)) {
      out.push_back(static_cast<char>(c));
    } else if (c == ' ' && for_query) {
      out.push_back('+');
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}
FILTER(urlencode) {
  (void)interp;
  a.expect_consumed("urlencode", 0);
  if (v.is_string() || !(v.is_list() || v.is_dict())) return Value(url_quote(v.to_str(), false));
  std::string out;
  auto add = [&](const Value& k, const Value& x) {
    if (!out.empty()) out += "&";
    out += url_quote(k.to_str(), true) + "=" + url_quote(x.to_str(), true);
  };
  if (v.is_dict()) {
    for (const auto& [k, x] : v.dict().items) add(k, x);
  } else {
    for (const auto& pair : iterate(v)) {
      std::vector<Value> kv = iterate(pair);
      if (kv.size() != 2) fail("ValueError", "urlencode needs (key, value) pairs");
      add(kv[0], kv[1]);
    }
  }
  return Value(std::move(out));
}

FILTER(filesizeformat) {
  (void)interp;
  bool binary = a.take(0, "binary", Value(false)).truthy();
  a.expect_consumed("filesizeformat", 1);
  double bytes;
  if (v.is_number()) bytes = v.as_float();
  else if (auto x = v.is_string() ? parse_python_float(v.str()) : std::nullopt) bytes = *x;
  else type_error("float() argument must be a string or a real number, not '" + v.type_name() + "'");
  const double base = binary ? 1024 : 1000;
  static const char* const decimal[] = {"kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"};
  static const char* const binary_prefixes[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"};
  if (bytes == 1) return Value("1 Byte");
  if (bytes < base) return Value(std::to_string(static_cast<int64_t>(bytes)) + " Bytes");
  char buf[64];
  for (int i = 0; i < 8; ++i) {
    double unit = std::pow(base, i + 2);
    if (bytes < unit || i == 7) {
      std::snprintf(buf, sizeof buf, "%.1f %s", base * bytes / unit, binary ? binary_prefixes[i] : decimal[i]);
      break;
    }
  }
  return Value(std::string(buf));
}

// textwrap's greedy filling, as wordwrap calls it: words (and long words, broken) on lines of at
// most `width` characters; existing line breaks are kept.
FILTER(wordwrap) {
  (void)interp;
  int64_t width = need_int(a.take(0, "width", Value(int64_t{79})), "width");
  bool break_long = a.take(1, "break_long_words", Value(true)).truthy();
  Value wrap = a.take(2, "wrapstring", Value::none());
  a.take(3, "break_on_hyphens", Value(true));
  a.expect_consumed("wordwrap", 4);
  if (width <= 0) fail("ValueError", "invalid width " + std::to_string(width) + " (must be > 0)");
  const std::string sep = wrap.is_none() ? "\n" : wrap.to_str();
  std::string out;
  bool first_paragraph = true;
  for (const auto& paragraph : split_lines(soft_str(v), false)) {
    if (!first_paragraph) out += sep;
    first_paragraph = false;
    std::vector<std::u32string> lines;
    std::u32string line;
    for (const auto& word_value : str_split(paragraph, Value::none(), -1, false)) {
      std::u32string word = to_code_points(word_value.str());
      const size_t w = static_cast<size_t>(width);
      while (true) {
        if (line.empty()) {
          if (word.size() <= w || !break_long) { line = word; break; }
          lines.push_back(word.substr(0, w));
          word = word.substr(w);
          continue;
        }
        if (line.size() + 1 + word.size() <= w) { line += U' '; line += word; break; }
        // A word longer than a whole line fills the rest of this one first (textwrap does).
        if (word.size() > w && break_long && line.size() + 1 < w) {
          size_t room = w - line.size() - 1;
          line += U' ';
          line += word.substr(0, room);
          word = word.substr(room);
        }
        lines.push_back(line);
        line.clear();
      }
    }
    if (!line.empty()) lines.push_back(line);
    for (size_t i = 0; i < lines.size(); ++i) out += (i ? sep : "") + from_code_points(lines[i]);
  }
  return Value(std::move(out));
}

// pprint.pformat: the repr (values that fit on one 80-column line print the same).
FILTER(pprint) {
  (void)interp;
  a.expect_consumed("pprint", 0);
  return Value(v.repr());
}

FILTER(random) {
  (void)interp;
  a.expect_consumed("random", 0);
  std::vector<Value> items = iterate(v);
  if (items.empty()) return Value::undefined("No random item, sequence was empty.");
  static thread_local std::mt19937_64 engine{std::random_device{}()};
  return items[std::uniform_int_distribution<size_t>(0, items.size() - 1)(engine)];
}

#undef FILTER

const std::unordered_map<std::string, FilterFn>& filters() {
  static const std::unordered_map<std::string, FilterFn> table = {
      {"abs", filter_abs}, {"attr", filter_attr}, {"batch", filter_batch}, {"capitalize", filter_capitalize},
      {"center", filter_center}, {"count", filter_length}, {"d", filter_default}, {"default", filter_default},
      {"dictsort", filter_dictsort}, {"e", filter_escape}, {"escape", filter_escape}, {"first", filter_first},
      {"float", filter_float}, {"forceescape", filter_forceescape}, {"format", filter_format}, {"indent", filter_indent},
      {"int", filter_int}, {"items", filter_items}, {"join", filter_join}, {"last", filter_last},
      {"length", filter_length}, {"list", filter_list}, {"lower", filter_lower}, {"map", filter_map},
      {"max", filter_max}, {"min", filter_min}, {"reject", filter_reject}, {"rejectattr", filter_rejectattr},
      {"replace", filter_replace}, {"reverse", filter_reverse}, {"round", filter_round}, {"safe", filter_safe},
      {"select", filter_select}, {"selectattr", filter_selectattr}, {"sort", filter_sort}, {"string", filter_string},
      {"striptags", filter_striptags}, {"sum", filter_sum}, {"title", filter_title}, {"tojson", filter_tojson},
      {"trim", filter_trim}, {"truncate", filter_truncate}, {"unique", filter_unique}, {"upper", filter_upper},
      {"wordcount", filter_wordcount}, {"slice", filter_slice}, {"groupby", filter_groupby},
      {"xmlattr", filter_xmlattr}, {"urlencode", filter_urlencode}, {"filesizeformat", filter_filesizeformat},
      {"wordwrap", filter_wordwrap}, {"pprint", filter_pprint}, {"random", filter_random}};
  return table;
}

// ---- tests ----

#define TEST(name) bool test_##name(Interpreter& interp, const Value& v, CallArgs& a)
#define NO_ARGS(name) (void)interp; a.expect_consumed(name, 0)

TEST(defined) { NO_ARGS("defined"); return !v.is_undefined(); }
TEST(undefined) { NO_ARGS("undefined"); return v.is_undefined(); }
TEST(none) { NO_ARGS("none"); return v.is_none(); }
TEST(boolean) { NO_ARGS("boolean"); return v.is_bool(); }
TEST(true) { NO_ARGS("true"); return v.is_bool() && v.as_bool(); }
TEST(false) { NO_ARGS("false"); return v.is_bool() && !v.as_bool(); }
TEST(integer) { NO_ARGS("integer"); return v.is_int(); }
TEST(float) { NO_ARGS("float"); return v.is_float(); }
TEST(number) { NO_ARGS("number"); return v.is_number(); }
TEST(string) { NO_ARGS("string"); return v.is_string(); }
TEST(mapping) { NO_ARGS("mapping"); return v.is_dict(); }
// len() and __getitem__: Undefined has both (they fail when called).
TEST(sequence) { NO_ARGS("sequence"); return v.is_undefined() || v.is_string() || (v.is_list() && !v.is_generator()) || v.is_dict(); }
TEST(iterable) {
  NO_ARGS("iterable");
  return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict() ||
         (v.is_object() && v.object().type_name() == "LoopContext");
}
TEST(callable) { NO_ARGS("callable"); return v.is_object() && v.object().callable(); }
TEST(lower) {
  NO_ARGS("lower");
  CallArgs none;
  return str_method(interp, v.to_str(), "islower", none).as_bool();
}
TEST(upper) {
  NO_ARGS("upper");
  CallArgs none;
  return str_method(interp, v.to_str(), "isupper", none).as_bool();
}
TEST(escaped) { NO_ARGS("escaped"); return v.is_markup(); }

Value one_arg(CallArgs& a, const char* name) {
  Value x = a.take(0, "other");
  a.expect_consumed(name, 1);
  return x;
}
TEST(eq) { (void)interp; return equals(v, one_arg(a, "eq")); }
TEST(ne) { (void)interp; return !equals(v, one_arg(a, "ne")); }
TEST(lt) { (void)interp; return compare(v, one_arg(a, "lt")) < 0; }
TEST(le) { (void)interp; return compare(v, one_arg(a, "le")) <= 0; }
TEST(gt) { (void)interp; return compare(v, one_arg(a, "gt")) > 0; }
TEST(ge) { (void)interp; return compare(v, one_arg(a, "ge")) >= 0; }
TEST(in) {
  (void)interp;
  Value seq = a.take(0, "seq");
  a.expect_consumed("in", 1);
  if (seq.is_string()) {
    if (!v.is_string()) type_error("'in <string>' requires string as left operand, not " + v.type_name());
    return seq.str().find(v.str()) != std::string::npos;
  }
  if (seq.is_dict()) return seq.dict().find(v) != nullptr;
  for (const auto& x : iterate(seq))
    if (equals(x, v)) return true;
  return false;
}
TEST(sameas) {
  (void)interp;
  Value other = one_arg(a, "sameas");
  if (v.kind() != other.kind()) return false;
  switch (v.kind()) {
    case Value::Kind::None: case Value::Kind::Undefined: return v.is_none() || &v == &other;
    case Value::Kind::Bool: case Value::Kind::Int: case Value::Kind::Float: return equals(v, other);
    case Value::Kind::String: return &v.str() == &other.str();
    case Value::Kind::List: return &v.list() == &other.list();
    case Value::Kind::Dict: return &v.dict() == &other.dict();
    case Value::Kind::Object: return &v.object() == &other.object();
  }
  return false;
}
int64_t integer_of(const Value& v) {
  if (v.is_undefined()) v.fail_undefined();
  if (v.is_float()) return float_to_int(std::fmod(v.as_float(), 2.0));
  if (!v.is_number()) type_error("not all arguments converted during string formatting");
  return v.as_int();
}
TEST(odd) { NO_ARGS("odd"); return v.is_float() ? std::fmod(std::fabs(v.as_float()), 2.0) == 1.0 : integer_of(v) % 2 != 0; }
TEST(even) { NO_ARGS("even"); return v.is_float() ? std::fmod(v.as_float(), 2.0) == 0.0 : integer_of(v) % 2 == 0; }
TEST(divisibleby) {
  (void)interp;
  Value n = a.take(0, "num");
  a.expect_consumed("divisibleby", 1);
  if (v.is_undefined()) v.fail_undefined();
  if (!v.is_number() || !n.is_number()) type_error("unsupported operand type(s) for %");
  if (n.as_float() == 0.0) fail("ZeroDivisionError", "integer division or modulo by zero");
  if (v.is_float() || n.is_float()) return std::fmod(v.as_float(), n.as_float()) == 0.0;
  return v.as_int() % n.as_int() == 0;
}
TEST(filter) { NO_ARGS("filter"); return v.is_string() && find_filter(v.str()) != nullptr; }
TEST(test) { NO_ARGS("test"); return v.is_string() && find_test(v.str()) != nullptr; }

#undef TEST
#undef NO_ARGS

const std::unordered_map<std::string, TestFn>& tests() {
  static const std::unordered_map<std::string, TestFn> table = {
      {"defined", test_defined}, {"undefined", test_undefined}, {"none", test_none}, {"boolean", test_boolean},
      {"true", test_true}, {"false", test_false}, {"integer", test_integer}, {"float", test_float},
      {"number", test_number}, {"string", test_string}, {"mapping", test_mapping}, {"sequence", test_sequence},
      {"iterable", test_iterable}, {"callable", test_callable}, {"lower", test_lower}, {"upper", test_upper},
      {"escaped", test_escaped}, {"eq", test_eq}, {"equalto", test_eq}, {"==", test_eq}, {"ne", test_ne},
      {"!=", test_ne}, {"lt", test_lt}, {"lessthan", test_lt}, {"<", test_lt}, {"le", test_le}, {"<=", test_le},
      {"gt", test_gt}, {"greaterthan", test_gt}, {">", test_gt}, {"ge", test_ge}, {">=", test_ge},
      {"in", test_in}, {"sameas", test_sameas}, {"odd", test_odd}, {"even", test_even},
      {"divisibleby", test_divisibleby}, {"filter", test_filter}, {"test", test_test}};
  return table;
}

// ---- globals ----

class Namespace final : public Object {
 public:
  Dict attributes;
  std::string type_name() const override { return "Namespace"; }
  std::string repr() const override {
    std::string s = "<Namespace {";
    bool first = true;
    for (const auto& [k, v] : attributes.items) {
      if (!first) s += ", ";
      first = false;
      k.append_repr(s);
      s += ": ";
      v.append_repr(s);
    }
    return s + "}>";
  }
  Value attribute(const std::string& name) const override {
    const Value* v = attributes.find(std::string_view(name));
    return v ? *v : Value();
  }
  bool set_attribute(const std::string& name, Value value) override {
    attributes.set(Value(name), std::move(value));
    return true;
  }
};

void fill_from(Dict& d, CallArgs& a, const char* function) {
  if (a.positional.size() > 1) type_error(std::string(function) + " expected at most 1 argument, got " + std::to_string(a.positional.size()));
  if (!a.positional.empty()) {
    const Value& init = a.positional.front();
    if (init.is_dict()) {
      for (const auto& [k, v] : init.dict().items) d.set(k, v);
    } else {
      for (const auto& pair : iterate(init)) {
        std::vector<Value> kv = iterate(pair);
        if (kv.size() != 2) fail("ValueError", "dictionary update sequence element has length " + std::to_string(kv.size()) + "; 2 is required");
        d.set(kv[0], kv[1]);
      }
    }
  }
  for (auto& [k, v] : a.keyword) d.set(Value(k), v);
}

Value global_namespace(Interpreter&, CallArgs& a) {
  auto ns = std::make_shared<Namespace>();
  fill_from(ns->attributes, a, "namespace");
  return Value(std::shared_ptr<Object>(std::move(ns)));
}

Value global_dict(Interpreter&, CallArgs& a) {
  auto d = std::make_shared<Dict>();
  fill_from(*d, a, "dict");
  return Value(std::move(d));
}

constexpr int64_t kMaxRange = 100000;  // jinja2.sandbox.MAX_RANGE

Value global_range(Interpreter&, CallArgs& a) {
  if (!a.keyword.empty()) type_error("range() takes no keyword arguments");
  if (a.positional.empty() || a.positional.size() > 3)
    type_error("range expected at most 3 arguments, got " + std::to_string(a.positional.size()));
  int64_t start = 0, stop, step = 1;
  if (a.positional.size() == 1) {
    stop = need_int(a.positional[0], "range");
  } else {
    start = need_int(a.positional[0], "range");
    stop = need_int(a.positional[1], "range");
    if (a.positional.size() == 3) step = need_int(a.positional[2], "range");
  }
  if (step == 0) fail("ValueError", "range() arg 3 must not be zero");
  __int128 span = step > 0 ? (static_cast<__int128>(stop) - start + step - 1) / step
                           : (static_cast<__int128>(start) - stop - step - 1) / -step;
  if (span < 0) span = 0;
  if (span > kMaxRange)
    fail("OverflowError", "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
  std::vector<Value> items;
  items.reserve(static_cast<size_t>(span));
  for (int64_t i = 0, x = start; i < static_cast<int64_t>(span); ++i, x += step) items.emplace_back(x);
  auto range = std::make_shared<List>();
  range->items = std::move(items);
  range->shape = List::Shape::Range;
  range->range_start = start;
  range->range_stop = stop;
  range->range_step = step;
  return Value(std::move(range));
}

Value global_raise_exception(Interpreter&, CallArgs& a) {
  Value message = a.take(0, "message");
  a.expect_consumed("raise_exception", 1);
  fail("TemplateError", message.to_str());
}

Value global_strftime_now(Interpreter& interp, CallArgs& a) {
  Value format = a.take(0, "format");
  a.expect_consumed("strftime_now", 1);
  const std::string& f = need_str(format, "strftime() argument 1");
  std::tm tm{};
  if (!interp.now.empty()) {
    if (std::sscanf(interp.now.c_str(), "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                    &tm.tm_min, &tm.tm_sec) != 6)
      fail("ValueError", "PLUGFORMER_CHAT_TEMPLATE_NOW must look like 2025-01-05T07:08:09, got '" + interp.now + "'");
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    tm.tm_isdst = -1;
    std::time_t t = timegm(&tm);
    gmtime_r(&t, &tm);  // fills in the weekday and day of the year
  } else {
    std::time_t t = std::time(nullptr);
    localtime_r(&t, &tm);
  }
  if (f.empty()) return Value("");
  // datetime.now() is naive: %Z and %z print nothing.
  std::string naive;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] == '%' && i + 1 < f.size()) {
      if (f[i + 1] == 'Z' || f[i + 1] == 'z') { ++i; continue; }
      naive += f.substr(i, 2);
      ++i;
      continue;
    }
    naive.push_back(f[i]);
  }
  if (naive.empty()) return Value("");
  std::string out(naive.size() * 8 + 64, '\0');
  size_t n = std::strftime(out.data(), out.size(), naive.c_str(), &tm);
  out.resize(n);
  return Value(std::move(out));
}

class Cycler final : public Object {
 public:
  explicit Cycler(std::vector<Value> items) : items_(std::move(items)) {}
  std::string type_name() const override { return "Cycler"; }
  Value attribute(const std::string& name) const override {
    if (name == "current") return items_[pos_];
    if (name == "next" || name == "reset")
      return Value(std::make_shared<CyclerMethod>(
          std::const_pointer_cast<Cycler>(std::static_pointer_cast<const Cycler>(shared_from_this())), name));
    return Value();
  }

 private:
  class CyclerMethod final : public Object {
   public:
    CyclerMethod(std::shared_ptr<Cycler> c, std::string n) : cycler_(std::move(c)), name_(std::move(n)) {}
    std::string type_name() const override { return "method"; }
    bool callable() const override { return true; }
    Value call(Interpreter&, CallArgs&) override {
      if (name_ == "reset") { cycler_->pos_ = 0; return Value::none(); }
      Value v = cycler_->items_[cycler_->pos_];
      cycler_->pos_ = (cycler_->pos_ + 1) % cycler_->items_.size();
      return v;
    }

   private:
    std::shared_ptr<Cycler> cycler_;
    std::string name_;
  };
  std::vector<Value> items_;
  size_t pos_ = 0;
};

Value global_cycler(Interpreter&, CallArgs& a) {
  if (a.positional.empty()) type_error("at least one item has to be provided");
  return Value(std::shared_ptr<Object>(std::make_shared<Cycler>(a.positional)));
}

class Joiner final : public Object {
 public:
  explicit Joiner(std::string sep) : sep_(std::move(sep)) {}
  std::string type_name() const override { return "Joiner"; }
  bool callable() const override { return true; }
  Value call(Interpreter&, CallArgs&) override {
    if (!used_) { used_ = true; return Value(""); }
    return Value(sep_);
  }

 private:
  std::string sep_;
  bool used_ = false;
};

Value global_joiner(Interpreter&, CallArgs& a) {
  Value sep = a.take(0, "sep", Value(", "));
  a.expect_consumed("joiner", 1);
  return Value(std::shared_ptr<Object>(std::make_shared<Joiner>(sep.to_str())));
}

// lipsum(n=5, html=True, min=20, max=100): n paragraphs of random lorem-ipsum words.
Value global_lipsum(Interpreter&, CallArgs& a) {
  int64_t n = need_int(a.take(0, "n", Value(int64_t{5})), "n");
  bool html = a.take(1, "html", Value(true)).truthy();
  int64_t lo = need_int(a.take(2, "min", Value(int64_t{20})), "min");
  int64_t hi = need_int(a.take(3, "max", Value(int64_t{100})), "max");
  a.expect_consumed("lipsum", 4);
  if (n < 0 || lo < 1 || hi < lo || n > 1000 || hi > 10000 || n * hi > 1'000'000)
    fail("ValueError", "lipsum arguments out of range");
  static const char* const words[] = {"lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit",
                                      "sed", "do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore",
                                      "magna", "aliqua", "enim", "ad", "minim", "veniam", "quis", "nostrud"};
  static thread_local std::mt19937_64 engine{std::random_device{}()};
  std::string out;
  for (int64_t p = 0; p < n; ++p) {
    int64_t count = std::uniform_int_distribution<int64_t>(lo, hi)(engine);
    std::string paragraph;
    for (int64_t w = 0; w < count; ++w) {
      std::string word = words[std::uniform_int_distribution<size_t>(0, std::size(words) - 1)(engine)];
      if (w == 0) word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0])));
      paragraph += (w ? " " : "") + word;
    }
    paragraph += ".";
    out += (p ? "\n\n" : "") + (html ? "<p>" + paragraph + "</p>" : paragraph);
  }
  return html ? Value::markup(std::move(out)) : Value(std::move(out));
}

const std::unordered_map<std::string, GlobalFn>& globals() {
  static const std::unordered_map<std::string, GlobalFn> table = {
      {"namespace", global_namespace}, {"dict", global_dict}, {"range", global_range},
      {"raise_exception", global_raise_exception}, {"strftime_now", global_strftime_now},
      {"cycler", global_cycler}, {"joiner", global_joiner}, {"lipsum", global_lipsum}};
  return table;
}

template <typename Map>
typename Map::mapped_type find_in(const Map& map, const std::string& name) {
  auto it = map.find(name);
  return it == map.end() ? nullptr : it->second;
}

}  // namespace

FilterFn find_filter(const std::string& name) { return find_in(filters(), name); }
FilterWriteFn find_filter_writer(const std::string& name) { return name == "tojson" ? write_tojson : nullptr; }
TestFn find_test(const std::string& name) { return find_in(tests(), name); }
GlobalFn find_global(const std::string& name) { return find_in(globals(), name); }

}  // namespace plugformer::jinja
