// Lexer and parser for Jinja2's template language, following jinja2/lexer.py and parser.py:
// the same whitespace control (trim_blocks, lstrip_blocks, "-" / "+" markers), the same operator
// precedence, the same statements. Errors are TemplateSyntaxError with line and column.
#include <algorithm>
#include <cstring>
#include <optional>

#include "jinja/ast.h"
#include "plugformer/error.h"
#include "tokenizers/unicode.h"

namespace plugformer::jinja {
namespace {

// The terms of a + b + ... left to right, for OutputStmt::sum_terms; empty for anything else and
// for longer sums than OutputStmt::kMaxSumTerms (the general path).
std::vector<const Expr*> sum_terms(const Expr& expr) {
  std::vector<const Expr*> right_to_left;
  const Expr* e = &expr;
  for (const auto* add = dynamic_cast<const BinaryExpr*>(e); add && add->op == BinaryOp::Add;
       add = dynamic_cast<const BinaryExpr*>(e)) {
    if (right_to_left.size() + 1 >= OutputStmt::kMaxSumTerms) return {};
    right_to_left.push_back(add->right.get());
    e = add->left.get();
  }
  if (right_to_left.empty()) return {};
  right_to_left.push_back(e);
  return {right_to_left.rbegin(), right_to_left.rend()};
}

enum class Tok { Data, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, Eof };

struct Token {
  Tok type;
  std::string text;  // data, name, operator, decoded string
  Value number;
  int line = 1, column = 1;
};

const char* describe(const Token& t) {
  switch (t.type) {
    case Tok::Data: return "template data";
    case Tok::VarBegin: return "begin of print statement";
    case Tok::VarEnd: return "end of print statement";
    case Tok::BlockBegin: return "begin of statement block";
    case Tok::BlockEnd: return "end of statement block";
    case Tok::String: return "string";
    case Tok::Int: return "integer";
    case Tok::Float: return "float";
    case Tok::Eof: return "end of template";
    default: return nullptr;
  }
}

[[noreturn]] void syntax_error(const std::string& message, int line, int column) {
  throw TemplateSyntaxError(message + " (line " + std::to_string(line) + ", column " + std::to_string(column) + ")",
                            line, column);
}

// Python's \s: ASCII whitespace and Unicode spaces.
size_t whitespace_at(std::string_view s, size_t i) {
  if (i >= s.size()) return 0;
  unsigned char b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) return python_isspace(b) ? 1 : 0;
  size_t j = i;
  char32_t c = tok::utf8_next(s, j);
  return python_isspace(c) ? j - i : 0;
}

class Lexer {
 public:
  Lexer(std::string_view source, const SyntaxOptions& options) : options_(options) {
    // Newlines normalised to \n; one trailing newline dropped (keep_trailing_newline=False).
    source_.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        source_.push_back('\n');
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        source_.push_back(source[i]);
      }
    }
    if (!options.keep_trailing_newline && !source_.empty() && source_.back() == '\n') source_.pop_back();
  }

  std::vector<Token> run() {
    while (pos_ < source_.size()) root();
    push(Tok::Eof, "");
    return std::move(tokens_);
  }

 private:
  std::string source_;
  const SyntaxOptions& options_;
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int line_ = 1;
  size_t line_start_ = 0;
  bool line_starting_ = true;

  int column_at(size_t p) const { return static_cast<int>(p - line_start_) + 1; }
  void advance_to(size_t p) {
    for (size_t i = pos_; i < p; ++i)
      if (source_[i] == '\n') { ++line_; line_start_ = i + 1; }
    line_starting_ = p > pos_ && source_[p - 1] == '\n';
    pos_ = p;
  }
  void push(Tok type, std::string text, size_t at = std::string::npos) {
    Token t{type, std::move(text), Value(), line_, column_at(at == std::string::npos ? pos_ : at)};
    tokens_.push_back(std::move(t));
  }
  [[noreturn]] void error(const std::string& message) { syntax_error(message, line_, column_at(pos_)); }

  bool starts(size_t p, std::string_view s) const { return source_.compare(p, s.size(), s) == 0; }
  size_t skip_ws(size_t p) const {
    while (size_t n = whitespace_at(source_, p)) p += n;
    return p;
  }

  // `{% raw %}` at p: the position after it (and after "-%}"'s whitespace), or npos.
  size_t raw_begin_end(size_t p) const {
    size_t q = p + 2;
    if (q < source_.size() && (source_[q] == '-' || source_[q] == '+')) ++q;
    q = skip_ws(q);
    if (!starts(q, "raw")) return std::string::npos;
    q = skip_ws(q + 3);
    if (starts(q, "-%}")) return skip_ws(q + 3);
    if (starts(q, "%}")) return q + 2;
    return std::string::npos;
  }

  // The data before a tag, with the tag's whitespace control applied (lexer.py's OptionalLStrip).
  void emit_data(std::string_view text, char sign, bool variable) {
    if (sign == '-') {
      text = strip_whitespace(text, false, true);
    } else if (sign != '+' && options_.lstrip_blocks && !variable) {
      size_t l_pos = text.rfind('\n');
      l_pos = l_pos == std::string_view::npos ? 0 : l_pos + 1;
      if ((l_pos > 0 || line_starting_) && l_pos < text.size()) {
        size_t p = l_pos;
        while (p < text.size()) {
          size_t n = whitespace_at(text, p);
          if (!n) break;
          p += n;
        }
        if (p == text.size()) text = text.substr(0, l_pos);
      }
    }
    if (!text.empty()) push(Tok::Data, std::string(text));
  }

  // The end of a block tag / comment at p ("%}" or "#}" with its marker): the position after it.
  size_t block_suffix(size_t p, char sign, size_t delimiter) const {
    p += delimiter;
    if (sign == '-') return skip_ws(p);
    if (sign != '+' && options_.trim_blocks && p < source_.size() && source_[p] == '\n') return p + 1;
    return p;
  }

  void root() {
    size_t q = pos_;
    while (true) {
      q = source_.find('{', q);
      if (q == std::string::npos || q + 1 >= source_.size()) {
        push(Tok::Data, source_.substr(pos_));
        advance_to(source_.size());
        return;
      }
      char c = source_[q + 1];
      if (c == '{' || c == '%' || c == '#') break;
      ++q;
    }
    const char kind = source_[q + 1];
    const char sign = q + 2 < source_.size() && (source_[q + 2] == '-' || source_[q + 2] == '+') ? source_[q + 2] : 0;
    std::string_view text(source_.data() + pos_, q - pos_);
    if (kind == '%') {
      size_t raw_end = raw_begin_end(q);
      if (raw_end != std::string::npos) {
        emit_data(text, sign, false);
        advance_to(raw_end);
        raw();
        return;
      }
    }
    emit_data(text, sign, kind == '{');
    advance_to(q);
    size_t body = q + 2 + (sign ? 1 : 0);
    if (kind == '#') {
      size_t end = source_.find("#}", body);
      if (end == std::string::npos) error("Missing end of comment tag");
      char end_sign = end > body && (source_[end - 1] == '-' || source_[end - 1] == '+') ? source_[end - 1] : 0;
      advance_to(block_suffix(end, end_sign, 2));
      return;
    }
    push(kind == '{' ? Tok::VarBegin : Tok::BlockBegin, "");
    advance_to(body);
    tag(kind == '{');
  }

  void raw() {
    // (.*?)({%[-+]?\s*endraw\s*(+%}|-%}\s*|%}\n?))
    size_t p = pos_;
    while (true) {
      p = source_.find("{%", p);
      if (p == std::string::npos) error("Missing end of raw directive");
      size_t q = p + 2;
      char sign = q < source_.size() && (source_[q] == '-' || source_[q] == '+') ? source_[q] : 0;
      if (sign) ++q;
      q = skip_ws(q);
      if (starts(q, "endraw")) {
        q = skip_ws(q + 6);
        char end_sign = 0;
        if (starts(q, "+%}") || starts(q, "-%}")) end_sign = source_[q++];
        if (starts(q, "%}")) {
          emit_data(std::string_view(source_.data() + pos_, p - pos_), sign, false);
          advance_to(block_suffix(q, end_sign, 2));
          return;
        }
      }
      p += 2;
    }
  }

  void tag(bool variable) {
    std::vector<char> brackets;
    while (true) {
      if (pos_ >= source_.size())
        error(variable ? "unexpected end of template, expected 'end of print statement'"
                       : "unexpected end of template, expected 'end of statement block'");
      if (brackets.empty()) {
        if (variable) {
          if (starts(pos_, "-}}")) { push(Tok::VarEnd, ""); advance_to(skip_ws(pos_ + 3)); return; }
          if (starts(pos_, "}}")) { push(Tok::VarEnd, ""); advance_to(pos_ + 2); return; }
        } else {
          if (starts(pos_, "-%}") || starts(pos_, "+%}")) {
            push(Tok::BlockEnd, "");
            advance_to(block_suffix(pos_ + 1, source_[pos_], 2));
            return;
          }
          if (starts(pos_, "%}")) { push(Tok::BlockEnd, ""); advance_to(block_suffix(pos_, 0, 2)); return; }
        }
      }
      if (size_t n = whitespace_at(source_, pos_)) {
        size_t p = pos_ + n;
        while (size_t m = whitespace_at(source_, p)) p += m;
        advance_to(p);
        continue;
      }
      char c = source_[pos_];
      if (std::isdigit(static_cast<unsigned char>(c))) { number(); continue; }
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t p = pos_;
        while (p < source_.size() && (std::isalnum(static_cast<unsigned char>(source_[p])) || source_[p] == '_')) ++p;
        push(Tok::Name, source_.substr(pos_, p - pos_));
        advance_to(p);
        continue;
      }
      if (c == '\'' || c == '"') { string_literal(); continue; }
      static const char* const operators[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[",
                                              "]", "(", ")", "{", "}", ">", "<", "=", ".", ":", "|", ",", ";"};
      const char* op = nullptr;
      for (const char* candidate : operators)
        if (starts(pos_, candidate)) { op = candidate; break; }
      if (!op) {
        size_t p = pos_;
        char32_t cp = static_cast<unsigned char>(c) < 0x80 ? static_cast<char32_t>(c) : tok::utf8_next(source_, p);
        std::string shown;
        tok::utf8_append(shown, cp);
        error("unexpected char '" + shown + "' at " + std::to_string(pos_));
      }
      if (*op == '(' || *op == '[' || *op == '{') {
        brackets.push_back(*op == '(' ? ')' : *op == '[' ? ']' : '}');
        if (brackets.size() > options_.max_nesting) error("brackets nested too deeply");
      } else if (*op == ')' || *op == ']' || *op == '}') {
        if (brackets.empty()) error(std::string("unexpected '") + *op + "'");
        if (brackets.back() != *op) error(std::string("unexpected '") + *op + "', expected '" + brackets.back() + "'");
        brackets.pop_back();
      }
      push(Tok::Op, op);
      advance_to(pos_ + std::strlen(op));
    }
  }

  // float_re before integer_re, as the lexer tries them.
  void number() {
    auto digits = [&](size_t p) {  // (\d+_)*\d+ ; returns end or p when none
      size_t q = p;
      while (true) {
        size_t r = q;
        while (r < source_.size() && std::isdigit(static_cast<unsigned char>(source_[r]))) ++r;
        if (r == q) return q == p ? p : q - 1;  // a trailing '_' is not part of the number
        q = r;
        if (q < source_.size() && source_[q] == '_') ++q;
        else return q;
      }
    };
    auto strip_underscores = [](std::string s) {
      s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
      return s;
    };
    const bool after_dot = pos_ > 0 && source_[pos_ - 1] == '.';
    size_t int_end = digits(pos_);
    if (!after_dot) {
      size_t p = int_end;
      bool has_fraction = false;
      if (p < source_.size() && source_[p] == '.') {
        size_t f = digits(p + 1);
        if (f > p + 1) { p = f; has_fraction = true; }
      }
      size_t e = p;
      bool has_exponent = false;
      if (e < source_.size() && (source_[e] == 'e' || source_[e] == 'E')) {
        size_t s = e + 1;
        if (s < source_.size() && (source_[s] == '+' || source_[s] == '-')) ++s;
        size_t x = digits(s);
        if (x > s) { p = x; has_exponent = true; }
      }
      if (has_fraction || has_exponent) {
        Token t{Tok::Float, source_.substr(pos_, p - pos_), Value(), line_, column_at(pos_)};
        t.number = Value(std::strtod(strip_underscores(t.text).c_str(), nullptr));
        tokens_.push_back(std::move(t));
        advance_to(p);
        return;
      }
    }
    int base = 10;
    size_t p = pos_;
    if (source_[p] == '0' && p + 1 < source_.size() && std::strchr("bBoOxX", source_[p + 1])) {
      char b = static_cast<char>(std::tolower(static_cast<unsigned char>(source_[p + 1])));
      base = b == 'b' ? 2 : b == 'o' ? 8 : 16;
      size_t q = p + 2;
      auto valid = [&](char ch) {
        int v = std::isdigit(static_cast<unsigned char>(ch)) ? ch - '0'
                : std::isxdigit(static_cast<unsigned char>(ch)) ? std::tolower(static_cast<unsigned char>(ch)) - 'a' + 10
                                                                : 99;
        return v < base;
      };
      while (q + 1 < source_.size() + 1 && q < source_.size()) {
        if (source_[q] == '_' && q + 1 < source_.size() && valid(source_[q + 1])) q += 2;
        else if (valid(source_[q])) ++q;
        else break;
      }
      if (q == p + 2) base = 10;  // "0x" alone: the integer 0 followed by a name
      else {
        push_int(source_.substr(p + 2, q - p - 2), base, p);
        advance_to(q);
        return;
      }
    }
    size_t q;
    if (source_[p] == '0') {  // 0(_?0)*
      q = p + 1;
      while (q < source_.size()) {
        if (source_[q] == '0') ++q;
        else if (source_[q] == '_' && q + 1 < source_.size() && source_[q + 1] == '0') q += 2;
        else break;
      }
    } else {
      q = int_end;
    }
    push_int(source_.substr(p, q - p), 10, p);
    advance_to(q);
  }

  void push_int(const std::string& text, int base, size_t at) {
    std::string digits;
    for (char ch : text)
      if (ch != '_') digits.push_back(ch);
    errno = 0;
    char* end = nullptr;
    long long v = std::strtoll(digits.c_str(), &end, base);
    if (errno == ERANGE) error("integer literal too large: " + text);
    Token t{Tok::Int, text, Value(static_cast<int64_t>(v)), line_, column_at(at)};
    tokens_.push_back(std::move(t));
  }

  void string_literal() {
    const char quote = source_[pos_];
    size_t p = pos_ + 1;
    std::string raw;
    while (true) {
      if (p >= source_.size()) error("unexpected char '" + std::string(1, quote) + "' at " + std::to_string(pos_));
      char c = source_[p];
      if (c == '\\' && p + 1 < source_.size()) { raw.push_back(c); raw.push_back(source_[p + 1]); p += 2; continue; }
      if (c == quote) break;
      raw.push_back(c);
      ++p;
    }
    Token t{Tok::String, unescape(raw), Value(), line_, column_at(pos_)};
    tokens_.push_back(std::move(t));
    advance_to(p + 1);
  }

  // Python's "unicode-escape" decoding of a literal's body.
  std::string unescape(const std::string& raw) {
    std::string out;
    out.reserve(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] != '\\' || i + 1 >= raw.size()) { out.push_back(raw[i]); continue; }
      char e = raw[++i];
      auto hex = [&](size_t count) {
        uint32_t v = 0;
        for (size_t k = 1; k <= count; ++k) {
          if (i + k >= raw.size() || !std::isxdigit(static_cast<unsigned char>(raw[i + k])))
            error("truncated \\" + std::string(1, e) + " escape in string literal");
          char h = static_cast<char>(std::tolower(static_cast<unsigned char>(raw[i + k])));
          v = v * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : h - 'a' + 10);
        }
        i += count;
        if (v > 0x10FFFF) error("illegal Unicode character in string literal");
        if (v >= 0xD800 && v <= 0xDFFF) error("surrogate code point in string literal");
        tok::utf8_append(out, v);
      };
      switch (e) {
        case '\n': break;
        case '\\': out.push_back('\\'); break;
        case '\'': out.push_back('\''); break;
        case '"': out.push_back('"'); break;
        case 'a': out.push_back('\a'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'v': out.push_back('\v'); break;
        case 'x': hex(2); break;
        case 'u': hex(4); break;
        case 'U': hex(8); break;
        default:
          if (e >= '0' && e <= '7') {
            uint32_t v = static_cast<uint32_t>(e - '0');
            for (int k = 0; k < 2 && i + 1 < raw.size() && raw[i + 1] >= '0' && raw[i + 1] <= '7'; ++k)
              v = v * 8 + static_cast<uint32_t>(raw[++i] - '0');
            tok::utf8_append(out, v);
          } else {
            out.push_back('\\');
            out.push_back(e);
          }
      }
    }
    return out;
  }
};

// ---- Parser ----

class Parser {
 public:
  Parser(std::vector<Token> tokens, Program& program, const SyntaxOptions& options)
      : tokens_(std::move(tokens)), program_(program), options_(options) {}

  Body parse_template() {
    Body body = subparse({});
    if (cur().type != Tok::Eof) fail("unexpected '" + cur().text + "'");
    return body;
  }

 private:
  std::vector<Token> tokens_;
  size_t i_ = 0;
  Program& program_;
  const SyntaxOptions& options_;
  size_t depth_ = 0;
  int soft_ = 0;         // inside an if / inline-if: unknown filters and tests fail when run
  int loops_ = 0;        // inside a for body: break / continue allowed
  std::vector<std::vector<std::string>> end_stack_;  // the end tags open blocks wait for
  std::vector<MacroStmt*> macros_;  // macros being parsed: which of varargs / kwargs / caller they read

  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& parser) : p(parser) {
      if (++p.depth_ > p.options_.max_nesting) p.fail("template nested too deeply (more than " +
                                                      std::to_string(p.options_.max_nesting) + " levels)");
    }
    ~DepthGuard() { --p.depth_; }
  };

  const Token& cur() const { return tokens_[i_]; }
  const Token& peek(size_t k = 1) const { return tokens_[std::min(i_ + k, tokens_.size() - 1)]; }
  Token next() { return tokens_[i_ < tokens_.size() - 1 ? i_++ : i_]; }
  [[noreturn]] void fail(const std::string& message) const { syntax_error(message, cur().line, cur().column); }
  [[noreturn]] void fail_at(const std::string& message, const Token& t) const { syntax_error(message, t.line, t.column); }

  bool is_op(std::string_view op) const { return cur().type == Tok::Op && cur().text == op; }
  bool is_name(std::string_view n) const { return cur().type == Tok::Name && cur().text == n; }
  bool skip_op(std::string_view op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(std::string_view n) {
    if (!is_name(n)) return false;
    next();
    return true;
  }
  std::string show(const Token& t) const {
    if (const char* d = describe(t)) return d;
    return t.text;
  }
  void expect_op(std::string_view op) {
    if (!skip_op(op)) fail("expected token '" + std::string(op) + "', got '" + show(cur()) + "'");
  }
  std::string expect_name() {
    if (cur().type != Tok::Name) fail("expected token 'name', got '" + show(cur()) + "'");
    return next().text;
  }
  void expect(Tok type) {
    if (cur().type != type) {
      Token want{type, "", Value(), 0, 0};
      fail(std::string("expected token '") + describe(want) + "', got '" + show(cur()) + "'");
    }
    next();
  }

  template <typename T>
  std::unique_ptr<T> node(int line) {
    auto n = std::make_unique<T>();
    n->line = line;
    return n;
  }

  std::unique_ptr<NameExpr> name_node(const std::string& name, int line) {
    auto n = node<NameExpr>(line);
    n->name = name;
    n->slot = program_.slot(name);
    n->global = find_global(name);
    n->undefined = Value::undefined("'" + name + "' is undefined");
    for (MacroStmt* m : macros_) {
      if (name == "varargs") m->uses_varargs = true;
      if (name == "kwargs") m->uses_kwargs = true;
      if (name == "caller") m->uses_caller = true;
    }
    return n;
  }

  // ---- statements ----
  Body subparse(const std::vector<std::string>& end_tags) {
    DepthGuard guard(*this);
    Body body;
    while (cur().type != Tok::Eof) {
      const Token& t = cur();
      if (t.type == Tok::Data) {
        auto s = node<TextStmt>(t.line);
        s->text = t.text;
        next();
        body.push_back(std::move(s));
      } else if (t.type == Tok::VarBegin) {
        int line = t.line;
        next();
        auto s = node<OutputStmt>(line);
        s->expr = parse_tuple(true);
        s->sum_terms = sum_terms(*s->expr);
        if (const auto* filter = dynamic_cast<const FilterExpr*>(s->expr.get()); filter && filter->write && filter->input)
          s->written_filter = filter;
        expect(Tok::VarEnd);
        body.push_back(std::move(s));
      } else if (t.type == Tok::BlockBegin) {
        next();
        if (cur().type == Tok::Name &&
            std::find(end_tags.begin(), end_tags.end(), cur().text) != end_tags.end())
          return body;
        body.push_back(parse_statement());
        expect(Tok::BlockEnd);
      } else {
        fail("internal lexer state");
      }
    }
    if (!end_tags.empty()) unexpected_end(end_tags);
    return body;
  }

  [[noreturn]] void unexpected_end(const std::vector<std::string>& end_tags) const {
    std::string expected;
    for (const auto& e : end_tags) expected += (expected.empty() ? "'" : " or '") + e + "'";
    fail("Unexpected end of template. Jinja was looking for the following tags: " + expected +
         ". The innermost block that needs to be closed is '" + block_name(end_tags) + "'.");
  }
  static std::string block_name(const std::vector<std::string>& end_tags) {
    for (const auto& e : end_tags)
      if (e.rfind("end", 0) == 0) return e.substr(3);
    return end_tags.front();
  }

  // parse_statements: the body up to one of end_tags; leaves the end tag's name as current.
  Body statements(const std::vector<std::string>& end_tags, bool drop_end = false) {
    skip_op(":");
    expect(Tok::BlockEnd);
    end_stack_.push_back(end_tags);
    Body body = subparse(end_tags);
    end_stack_.pop_back();
    if (cur().type == Tok::Eof) unexpected_end(end_tags);
    if (drop_end) next();
    return body;
  }

  StmtPtr parse_statement() {
    const Token& t = cur();
    if (t.type != Tok::Name) fail("tag name expected");
    const std::string name = t.text;
    int line = t.line;
    if (name == "if") return parse_if();
    if (name == "for") return parse_for();
    if (name == "set") return parse_set();
    if (name == "macro") return parse_macro();
    if (name == "call") return parse_call_block();
    if (name == "filter") return parse_filter_block();
    if (name == "with") return parse_with();
    if (name == "autoescape") {
      auto s = node<AutoescapeStmt>(line);
      next();
      s->enabled = parse_expression(true);
      s->body = statements({"endautoescape"}, true);
      return s;
    }
    if (name == "generation" || name == "block") {
      next();
      if (name == "block") expect_name();
      auto s = node<BlockStmt>(line);
      std::string end = "end" + name;
      s->body = statements({end}, true);
      if (name == "block" && cur().type == Tok::Name) next();  // {% endblock name %}
      return s;
    }
    if (name == "break" || name == "continue") {
      if (!loops_) fail("'" + name + "' outside of a for loop");
      next();
      auto s = node<LoopControlStmt>(line);
      s->flow = name == "break" ? Flow::Break : Flow::Continue;
      return s;
    }
    for (const auto& open : end_stack_)
      if (std::find(open.begin(), open.end(), name) != open.end())
        fail("Encountered unknown tag '" + name + "'. Jinja was looking for the following tags: '" +
             end_stack_.back().front() + "'. The innermost block that needs to be closed is '" +
             block_name(end_stack_.back()) + "'.");
    fail("Encountered unknown tag '" + name + "'.");
  }

  StmtPtr parse_if() {
    auto s = node<IfStmt>(cur().line);
    next();
    ++soft_;
    while (true) {
      ExprPtr test = parse_tuple(false);
      Body body = statements({"elif", "else", "endif"});
      s->branches.emplace_back(std::move(test), std::move(body));
      Token t = next();
      if (t.text == "elif") continue;
      if (t.text == "else") s->otherwise = statements({"endif"}, true);
      break;
    }
    --soft_;
    return s;
  }

  StmtPtr parse_for() {
    auto s = node<ForStmt>(cur().line);
    next();
    int saved_soft = soft_;
    soft_ = 0;
    s->target = parse_assign_target(true, false, {"in"});
    if (!skip_name("in")) fail("expected token 'in', got '" + show(cur()) + "'");
    s->iterable = parse_tuple(false, {"recursive"});
    if (skip_name("if")) s->condition = parse_expression(true);
    s->recursive = skip_name("recursive");
    s->loop_slot = program_.slot("loop");
    ++loops_;
    s->body = statements({"endfor", "else"});
    --loops_;
    if (next().text == "else") {
      s->otherwise = statements({"endfor"}, true);
    }
    soft_ = saved_soft;
    return s;
  }

  Target parse_assign_target(bool with_tuple, bool with_namespace, const std::vector<std::string>& extra_end) {
    Target target;
    if (with_namespace && cur().type == Tok::Name && peek().type == Tok::Op && peek().text == ".") {
      target.name = next().text;
      target.namespace_slot = program_.slot(target.name);
      next();
      target.attribute = expect_name();
      return target;
    }
    if (!with_tuple) return name_target();
    std::vector<Target> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (cur().type == Tok::BlockEnd || cur().type == Tok::VarEnd || is_op(")") ||
          (cur().type == Tok::Name && std::find(extra_end.begin(), extra_end.end(), cur().text) != extra_end.end()))
        break;
      if (skip_op("(")) {
        Target inner = parse_assign_target(true, false, {});
        expect_op(")");
        items.push_back(std::move(inner));
      } else {
        items.push_back(name_target());
      }
      if (is_op(",")) is_tuple = true;
      else break;
    }
    if (items.empty()) fail("can't assign to an empty target");
    if (!is_tuple) return std::move(items.front());
    target.is_tuple = true;
    target.tuple = std::move(items);
    return target;
  }
  Target name_target() {
    if (cur().type != Tok::Name) fail("can't assign to '" + show(cur()) + "'");
    Target t;
    t.name = next().text;
    static const char* const reserved[] = {"true", "false", "none", "True", "False", "None"};
    for (const char* r : reserved)
      if (t.name == r) fail("can't assign to constant '" + t.name + "'");
    t.slot = program_.slot(t.name);
    return t;
  }

  StmtPtr parse_set() {
    int line = cur().line;
    next();
    Target target = parse_assign_target(true, true, {});
    if (skip_op("=")) {
      auto s = node<SetStmt>(line);
      s->target = std::move(target);
      s->value = parse_tuple(true);
      return s;
    }
    auto s = node<SetBlockStmt>(line);
    s->target = std::move(target);
    s->filters = filter_chain(false);
    s->body = statements({"endset"}, true);
    return s;
  }

  std::vector<std::unique_ptr<FilterExpr>> filter_chain(bool start_inline) {
    std::vector<std::unique_ptr<FilterExpr>> chain;
    while (start_inline || skip_op("|")) {
      start_inline = false;
      chain.push_back(parse_filter_call(nullptr));
    }
    return chain;
  }

  void parse_signature(MacroStmt& m) {
    expect_op("(");
    while (!is_op(")")) {
      if (!m.params.empty()) expect_op(",");
      if (is_op(")")) break;
      Target t = name_target();
      if (skip_op("=")) m.defaults.push_back(parse_expression(true));
      else if (!m.defaults.empty()) fail("non-default argument follows default argument");
      m.params.emplace_back(t.slot, t.name);
    }
    expect_op(")");
  }

  void finish_macro(MacroStmt& m) {
    m.varargs_slot = program_.slot("varargs");
    m.kwargs_slot = program_.slot("kwargs");
    m.caller_slot = program_.slot("caller");
  }

  StmtPtr parse_macro() {
    auto s = node<MacroStmt>(cur().line);
    next();
    Target name = name_target();
    s->name = name.name;
    s->slot = name.slot;
    parse_signature(*s);
    finish_macro(*s);
    int saved_soft = soft_, saved_loops = loops_;
    soft_ = loops_ = 0;
    macros_.push_back(s.get());
    s->body = statements({"endmacro"}, true);
    macros_.pop_back();
    soft_ = saved_soft;
    loops_ = saved_loops;
    return s;
  }

  StmtPtr parse_call_block() {
    auto s = node<CallBlockStmt>(cur().line);
    next();
    auto caller = node<MacroStmt>(s->line);
    caller->name = "caller";
    if (is_op("(")) parse_signature(*caller);
    finish_macro(*caller);
    ExprPtr call = parse_expression(true);
    auto* as_call = dynamic_cast<CallExpr*>(call.get());
    if (!as_call) fail("expected call");
    call.release();
    s->call.reset(as_call);
    int saved_soft = soft_, saved_loops = loops_;
    soft_ = loops_ = 0;
    macros_.push_back(caller.get());
    caller->body = statements({"endcall"}, true);
    macros_.pop_back();
    soft_ = saved_soft;
    loops_ = saved_loops;
    s->caller = std::move(caller);
    return s;
  }

  StmtPtr parse_filter_block() {
    auto s = node<FilterBlockStmt>(cur().line);
    next();
    s->filters = filter_chain(true);
    s->body = statements({"endfilter"}, true);
    return s;
  }

  StmtPtr parse_with() {
    auto s = node<WithStmt>(cur().line);
    next();
    while (cur().type != Tok::BlockEnd) {
      if (!s->assignments.empty()) expect_op(",");
      Target t = parse_assign_target(true, false, {});
      expect_op("=");
      s->assignments.emplace_back(std::move(t), parse_expression(true));
    }
    s->body = statements({"endwith"}, true);
    return s;
  }

  // ---- expressions ----
  bool is_tuple_end(const std::vector<std::string>& extra_end) const {
    if (cur().type == Tok::VarEnd || cur().type == Tok::BlockEnd || is_op(")")) return true;
    return cur().type == Tok::Name && std::find(extra_end.begin(), extra_end.end(), cur().text) != extra_end.end();
  }

  ExprPtr parse_tuple(bool with_condexpr, const std::vector<std::string>& extra_end = {},
                      bool explicit_parentheses = false) {
    int line = cur().line;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      items.push_back(parse_expression(with_condexpr));
      if (is_op(",")) is_tuple = true;
      else break;
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items.front());
      if (!explicit_parentheses) fail("Expected an expression, got '" + show(cur()) + "'");
    }
    auto t = node<ListExpr>(line);
    t->items = std::move(items);
    t->tuple = true;
    return t;
  }

  ExprPtr parse_expression(bool with_condexpr) {
    DepthGuard guard(*this);
    if (!with_condexpr) return parse_or();
    int line = cur().line;
    ExprPtr expr = parse_or();
    while (is_name("if")) {
      next();
      ++soft_;
      auto c = node<CondExpr>(line);
      c->test = parse_or();
      c->then = std::move(expr);
      if (skip_name("else")) c->otherwise = parse_expression(true);
      --soft_;
      expr = std::move(c);
    }
    return expr;
  }

  ExprPtr binary(BinaryOp op, ExprPtr l, ExprPtr r, int line) {
    auto b = node<BinaryExpr>(line);
    b->op = op;
    b->left = std::move(l);
    b->right = std::move(r);
    return b;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      int line = next().line;
      left = binary(BinaryOp::Or, std::move(left), parse_and(), line);
    }
    return left;
  }
  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      int line = next().line;
      left = binary(BinaryOp::And, std::move(left), parse_not(), line);
    }
    return left;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(*this);
      auto u = node<UnaryExpr>(next().line);
      u->op = '!';
      u->operand = parse_not();
      return u;
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    int line = cur().line;
    ExprPtr first = parse_math1();
    std::vector<std::pair<CompareOp, ExprPtr>> rest;
    while (true) {
      std::optional<CompareOp> op;
      if (cur().type == Tok::Op) {
        const std::string& o = cur().text;
        if (o == "==") op = CompareOp::Eq;
        else if (o == "!=") op = CompareOp::Ne;
        else if (o == "<") op = CompareOp::Lt;
        else if (o == "<=") op = CompareOp::Le;
        else if (o == ">") op = CompareOp::Gt;
        else if (o == ">=") op = CompareOp::Ge;
        if (op) next();
      } else if (is_name("in")) {
        next();
        op = CompareOp::In;
      } else if (is_name("not") && peek().type == Tok::Name && peek().text == "in") {
        next();
        next();
        op = CompareOp::NotIn;
      }
      if (!op) break;
      rest.emplace_back(*op, parse_math1());
    }
    if (rest.empty()) return first;
    auto c = node<CompareExpr>(line);
    c->first = std::move(first);
    c->rest = std::move(rest);
    return c;
  }
  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      Token t = next();
      left = binary(t.text == "+" ? BinaryOp::Add : BinaryOp::Sub, std::move(left), parse_concat(), t.line);
    }
    return left;
  }
  ExprPtr parse_concat() {
    int line = cur().line;
    ExprPtr first = parse_math2();
    if (!is_op("~")) return first;
    auto c = node<ConcatExpr>(line);
    c->parts.push_back(std::move(first));
    while (skip_op("~")) c->parts.push_back(parse_math2());
    return c;
  }
  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      Token t = next();
      BinaryOp op = t.text == "*" ? BinaryOp::Mul : t.text == "/" ? BinaryOp::Div : t.text == "//" ? BinaryOp::FloorDiv : BinaryOp::Mod;
      left = binary(op, std::move(left), parse_pow(), t.line);
    }
    return left;
  }
  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is_op("**")) {
      int line = next().line;
      left = binary(BinaryOp::Pow, std::move(left), parse_unary(true), line);
    }
    return left;
  }
  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    ExprPtr n;
    if (is_op("-") || is_op("+")) {
      Token t = next();
      auto u = node<UnaryExpr>(t.line);
      u->op = t.text[0];
      u->operand = parse_unary(false);
      n = std::move(u);
    } else {
      n = parse_primary();
    }
    n = parse_postfix(std::move(n));
    if (with_filter) n = parse_filter_expr(std::move(n));
    return n;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    int line = t.line;
    if (t.type == Tok::Name) {
      std::string name = next().text;
      if (name == "true" || name == "True" || name == "false" || name == "False") {
        auto c = node<ConstExpr>(line);
        c->value = Value(name == "true" || name == "True");
        return c;
      }
      if (name == "none" || name == "None") {
        auto c = node<ConstExpr>(line);
        c->value = Value::none();
        return c;
      }
      return name_node(name, line);
    }
    if (t.type == Tok::String) {
      std::string s;
      while (cur().type == Tok::String) s += next().text;
      auto c = node<ConstExpr>(line);
      c->set_string(std::move(s));
      return c;
    }
    if (t.type == Tok::Int || t.type == Tok::Float) {
      auto c = node<ConstExpr>(line);
      c->value = next().number;
      return c;
    }
    if (is_op("(")) {
      next();
      ExprPtr e = parse_tuple(true, {}, true);
      expect_op(")");
      return e;
    }
    if (is_op("[")) {
      next();
      auto l = node<ListExpr>(line);
      while (!is_op("]")) {
        if (!l->items.empty()) expect_op(",");
        if (is_op("]")) break;
        l->items.push_back(parse_expression(true));
      }
      expect_op("]");
      return l;
    }
    if (is_op("{")) {
      next();
      auto d = node<DictExpr>(line);
      while (!is_op("}")) {
        if (!d->items.empty()) expect_op(",");
        if (is_op("}")) break;
        ExprPtr k = parse_expression(true);
        expect_op(":");
        d->items.emplace_back(std::move(k), parse_expression(true));
      }
      expect_op("}");
      return d;
    }
    fail("unexpected '" + show(t) + "'");
  }

  ExprPtr parse_postfix(ExprPtr n) {
    while (true) {
      if (is_op(".") || is_op("[")) n = parse_subscript(std::move(n));
      else if (is_op("(")) n = parse_call(std::move(n));
      else return n;
    }
  }
  ExprPtr parse_filter_expr(ExprPtr n) {
    while (true) {
      if (is_op("|")) {
        next();
        n = parse_filter_call(std::move(n));
      } else if (is_name("is")) {
        n = parse_test(std::move(n));
      } else if (is_op("(")) {
        n = parse_call(std::move(n));
      } else {
        return n;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr object) {
    DepthGuard guard(*this);
    Token t = next();
    if (t.text == ".") {
      if (cur().type == Tok::Name) {
        auto g = node<GetAttrExpr>(t.line);
        g->object = std::move(object);
        g->name = next().text;
        g->methods = method_kinds(g->name);
        return g;
      }
      if (cur().type != Tok::Int) fail("expected name or number");
      auto g = node<GetItemExpr>(t.line);
      g->object = std::move(object);
      auto k = node<ConstExpr>(t.line);
      k->value = next().number;
      g->key = std::move(k);
      return g;
    }
    std::vector<ExprPtr> args;
    while (!is_op("]")) {
      if (!args.empty()) expect_op(",");
      args.push_back(parse_subscribed(object, args.empty()));
    }
    expect_op("]");
    if (args.size() == 1) {
      if (auto* slice = dynamic_cast<SliceExpr*>(args.front().get()); slice && !slice->object) {
        slice->object = std::move(object);
        return std::move(args.front());
      }
      auto g = node<GetItemExpr>(t.line);
      g->object = std::move(object);
      g->key = std::move(args.front());
      return g;
    }
    auto g = node<GetItemExpr>(t.line);
    g->object = std::move(object);
    auto tuple = node<ListExpr>(t.line);
    tuple->items = std::move(args);
    tuple->tuple = true;
    g->key = std::move(tuple);
    return g;
  }

  ExprPtr parse_subscribed(const ExprPtr&, bool) {
    int line = cur().line;
    ExprPtr start;
    if (!is_op(":")) {
      start = parse_expression(true);
      if (!is_op(":")) return start;
    }
    next();  // ':'
    auto s = node<SliceExpr>(line);
    s->start = std::move(start);
    if (!is_op(":") && !is_op("]") && !is_op(",")) s->stop = parse_expression(true);
    if (skip_op(":")) {
      if (!is_op("]") && !is_op(",")) s->step = parse_expression(true);
    }
    return s;
  }

  Arguments parse_call_args() {
    Token open = cur();
    expect_op("(");
    Arguments a;
    bool require_comma = false;
    auto ensure = [&](bool ok) {
      if (!ok) fail_at("invalid syntax for function call expression", open);
    };
    while (!is_op(")")) {
      if (require_comma) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (is_op("*")) {
        ensure(!a.star && !a.star_star);
        next();
        a.star = parse_expression(true);
      } else if (is_op("**")) {
        ensure(!a.star_star);
        next();
        a.star_star = parse_expression(true);
      } else if (cur().type == Tok::Name && peek().type == Tok::Op && peek().text == "=") {
        ensure(!a.star_star);
        std::string key = next().text;
        next();
        a.keyword.emplace_back(key, parse_expression(true));
      } else {
        ensure(!a.star && !a.star_star && a.keyword.empty());
        a.positional.push_back(parse_expression(true));
      }
      require_comma = true;
    }
    expect_op(")");
    return a;
  }

  ExprPtr parse_call(ExprPtr callee) {
    DepthGuard guard(*this);
    auto c = node<CallExpr>(cur().line);
    c->callee = std::move(callee);
    c->method = dynamic_cast<const GetAttrExpr*>(c->callee.get());
    c->function = dynamic_cast<const NameExpr*>(c->callee.get());
    c->args = parse_call_args();
    return c;
  }

  std::unique_ptr<FilterExpr> parse_filter_call(ExprPtr input) {
    DepthGuard guard(*this);
    Token t = cur();
    auto f = node<FilterExpr>(t.line);
    f->input = std::move(input);
    f->name = expect_name();
    while (skip_op(".")) f->name += "." + expect_name();
    f->fn = find_filter(f->name);
    f->write = find_filter_writer(f->name);
    if (!f->fn && !soft_) fail_at("No filter named '" + f->name + "'.", t);
    if (is_op("(")) f->args = parse_call_args();
    return f;
  }

  ExprPtr parse_test(ExprPtr input) {
    DepthGuard guard(*this);
    Token is_token = next();
    auto t = node<TestExpr>(is_token.line);
    t->input = std::move(input);
    t->negated = skip_name("not");
    Token name_token = cur();
    t->name = expect_name();
    while (skip_op(".")) t->name += "." + expect_name();
    t->fn = find_test(t->name);
    if (!t->fn && !soft_) fail_at("No test named '" + t->name + "'.", name_token);
    if (is_op("(")) {
      t->args = parse_call_args();
    } else if ((cur().type == Tok::Name || cur().type == Tok::String || cur().type == Tok::Int ||
                cur().type == Tok::Float || is_op("[") || is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) fail("You cannot chain multiple tests with is");
      t->args.positional.push_back(parse_postfix(parse_primary()));
    }
    return t;
  }
};

}  // namespace

std::unique_ptr<Program> parse(std::string_view source, const SyntaxOptions& options) {
  if (!valid_utf8(source)) throw TemplateSyntaxError("template source is not valid UTF-8", 0, 0);
  Lexer lexer(source, options);
  auto program = std::make_unique<Program>();
  Parser parser(lexer.run(), *program, options);
  program->body = parser.parse_template();
  return program;
}

}  // namespace plugformer::jinja
