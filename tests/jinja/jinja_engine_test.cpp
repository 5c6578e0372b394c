// The template engine beyond the real templates: errors with their kinds and positions, the
// limits that keep hostile templates bounded, continue_final_message, and Python's printing.
#include <chrono>

#include <gtest/gtest.h>

#include <plugformer/chat_template.h>

using plugformer::ChatTemplateOptions;
using plugformer::JinjaTemplate;
using plugformer::TemplateError;
using plugformer::TemplateLimits;
using plugformer::TemplateSyntaxError;
using json = nlohmann::ordered_json;

namespace {

std::string render(const std::string& source, const json& variables = json::object(), TemplateLimits limits = {}) {
  return JinjaTemplate(source, limits).render(variables, "2025-01-05T07:08:09");
}

std::string error_kind(const std::string& source, const json& variables = json::object(), TemplateLimits limits = {}) {
  try {
    render(source, variables, limits);
  } catch (const TemplateError& e) {
    return e.kind();
  }
  return "no error";
}

TEST(JinjaErrors, SyntaxErrorsNameLineAndColumn) {
  try {
    JinjaTemplate t("line one\n{% if x %}\n  {{ 1 + }}\n{% endif %}");
    FAIL() << "parsed";
  } catch (const TemplateSyntaxError& e) {
    EXPECT_EQ(e.line(), 3);
    EXPECT_GT(e.column(), 1);
    EXPECT_NE(std::string(e.what()).find("line 3"), std::string::npos) << e.what();
  }
  for (const char* bad : {"{% if x %}never closed", "{% endfor %}", "{{ 'unclosed string }}", "{{ x", "{% for %}",
                          "{{ x | no_such_filter }}", "{{ x is no_such_test }}", "{% do x.append(1) %}",
                          "{% break %}", "{{ (1 }}", "{{ 1 ]] }}", "{# never closed", "{% raw %}no end",
                          "{% macro m( %}{% endmacro %}", "{{ x !y }}"})
    EXPECT_THROW(JinjaTemplate{bad}, TemplateSyntaxError) << bad;
  EXPECT_THROW(JinjaTemplate("\xff\xfe{{ x }}"), TemplateSyntaxError);
}

TEST(JinjaErrors, RuntimeErrorsCarryJinjasExceptionKind) {
  EXPECT_EQ(error_kind("{{ missing.attribute }}"), "UndefinedError");
  EXPECT_EQ(error_kind("{% for x in none %}{% endfor %}"), "TypeError");
  EXPECT_EQ(error_kind("{{ 'a' + 1 }}"), "TypeError");
  EXPECT_EQ(error_kind("{{ 1 // 0 }}"), "ZeroDivisionError");
  EXPECT_EQ(error_kind("{% set xs = [] %}{{ xs.append(1) }}"), "SecurityError");
  EXPECT_EQ(error_kind("{% set d = {} %}{{ d.update({'a': 1}) }}"), "SecurityError");
  EXPECT_EQ(error_kind("{{ ''.__class__() }}"), "SecurityError");
  EXPECT_EQ(error_kind("{{ [1]|map('upper')|tojson }}"), "TypeError");  // a generator is not JSON
  EXPECT_EQ(error_kind("{% set x = 1 %}{% set x.y = 2 %}"), "TemplateRuntimeError");
  EXPECT_EQ(error_kind("{% if false %}{{ x | nope }}{% endif %}ok"), "no error");  // unknown filter, branch not run
  EXPECT_EQ(error_kind("{% if true %}{{ x | nope }}{% endif %}"), "TemplateRuntimeError");
  EXPECT_EQ(error_kind("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}"), "TypeError");
  // raise_exception's message passes through verbatim.
  try {
    render("{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}");
    FAIL();
  } catch (const TemplateError& e) {
    EXPECT_EQ(e.kind(), "TemplateError");
    EXPECT_STREQ(e.what(), "Conversation roles must alternate user/assistant/user/assistant/...");
  }
}

TEST(JinjaLimits, HostileTemplatesStopWithClearErrors) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  EXPECT_EQ(error_kind("{% for i in range(10**9) %}{% endfor %}"), "OverflowError");  // the sandbox's MAX_RANGE
  EXPECT_EQ(error_kind("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"), "RecursionError");
  EXPECT_EQ(error_kind("{{ 'x' * 10**12 }}"), "MemoryError");
  // Empty sequences repeated any number of times are empty at once (found by fuzz_jinja_template:
  // 10^9 repetitions of nothing took seconds); Python's range objects have no `*`.
  EXPECT_EQ(render("{{ ([] * 10**12) | length }}{{ '' * 10**12 }}|{{ [1] * 0 }}"), "0|[]");
  EXPECT_EQ(error_kind("{{ range(0) * 818888830 }}"), "TypeError");
  TemplateLimits small;
  small.max_output_bytes = 1000;
  EXPECT_EQ(error_kind("{% for i in range(1000) %}0123456789{% endfor %}", json::object(), small), "TemplateRuntimeError");
  // {{ x | tojson }} writes straight into the output: the same limit holds, and the same text as
  // through a variable.
  const json big = {{"x", std::vector<int>(400, 7)}};
  EXPECT_EQ(error_kind("{{ x | tojson }}", big, small), "TemplateRuntimeError");
  EXPECT_EQ(error_kind("{{ x | tojson(indent=2) }}", big), "no error");
  EXPECT_EQ(render("{{ x | tojson(indent=2) }}", big), render("{% set s = x | tojson(indent=2) %}{{ s }}", big));
  small.max_steps = 5000;
  EXPECT_EQ(error_kind("{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}", json::object(), small),
            "TemplateRuntimeError");
  EXPECT_EQ(error_kind("{% set ns = namespace(n=0) %}{% for i in range(100000) %}{% for j in range(100000) %}"
                       "{% set ns.n = ns.n + 1 %}{% endfor %}{% endfor %}"),
            "TemplateRuntimeError");  // 10^10 iterations: the default step limit
  EXPECT_THROW(JinjaTemplate("{{ " + std::string(10000, '(') + "1" + std::string(10000, ')') + " }}"), TemplateSyntaxError);
  std::string nested;
  for (int i = 0; i < 1000; ++i) nested += "{% if true %}";
  EXPECT_THROW(JinjaTemplate{nested}, TemplateSyntaxError);
  EXPECT_LT(std::chrono::duration<double>(clock::now() - start).count(), 60.0);
}

// Slices count their positions instead of listing them; expected texts from Python jinja2 3.1.2.
TEST(JinjaValues, SlicesWithAnyStepAsPythonDoes) {
  const json xs = {{"xs", json::parse("[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]")}};
  EXPECT_EQ(render("{{ xs[::-9223372036854775807] }}|{{ xs[::9223372036854775807] }}|{{ xs[-1:-10:-3] }}", xs),
            "[9]|[0]|[9, 6, 3]");
  EXPECT_EQ(render("{{ xs[::(-9223372036854775807 - 1)] }}|{{ 'abc'[::(-9223372036854775807 - 1)] }}", xs), "[9]|c");
  EXPECT_EQ(render("{{ 'abcdefg'[5:1:-2] }}|{{ xs[7:2] }}|{{ xs[2:7:3] }}|{{ xs[7:2:-1][::-1] }}", xs),
            "fd|[]|[2, 5]|[3, 4, 5, 6, 7]");
}

// Python's str is always valid UTF-8; a variable the template uses that is not is a TypeError
// wherever the string sits in it, and valid text of any length passes through unchanged (ASCII
// runs are checked 16 bytes at a time).
TEST(JinjaValues, TemplateVariablesMustBeValidUtf8) {
  const std::string ascii(37, 'a');
  for (const std::string bad : {"\x80", "\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82"}) {
    for (const std::string& text : {bad, ascii + bad, ascii + ascii + bad + "b", bad + ascii}) {
      SCOPED_TRACE(text);
      EXPECT_EQ(error_kind("{{ x }}", {{"x", text}}), "TypeError");
      EXPECT_EQ(error_kind("{{ x | length }}", {{"x", json::array({json::object({{"k", text}})})}}), "TypeError");
    }
  }
  const std::string good = ascii + "\u00e9\u20ac\U0001f600" + ascii + "\u00ff";
  EXPECT_EQ(render("{{ x }}", {{"x", good}}), good);
  EXPECT_EQ(render("{{ x[0].k }}", {{"x", json::array({json::object({{"k", good + good}})})}}), good + good);
}

TEST(JinjaValues, PrintsValuesAsPythonDoes) {
  EXPECT_EQ(render("{{ none }}|{{ true }}|{{ 1.0 }}|{{ 0.1 + 0.2 }}|{{ 1e16 }}|{{ 1e-5 }}|{{ 7 / 2 }}|{{ -7 // 2 }}|{{ -7 % 3 }}"),
            "None|True|1.0|0.30000000000000004|1e+16|1e-05|3.5|-4|2");
  EXPECT_EQ(render("{{ x }}", {{"x", json::parse(R"([{"a": "it's", "b": null, "c": [true, 1.5]}])")}}),
            "[{'a': \"it's\", 'b': None, 'c': [True, 1.5]}]");
  EXPECT_EQ(render("{{ (1,) }}{{ ('a', 2) }}{{ undefined_name }}|{{ 'caf\\u00e9'[1:] }}|{{ '\\u00a0\\u200b' ~ [' \\u00a0\\u200b'] }}"),
            "(1,)('a', 2)|afé|\u00a0\u200b[' \\xa0\\u200b']");
  EXPECT_EQ(render("{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ x | tojson(ensure_ascii=true) }}",
                   {{"x", json::parse(R"({"k": ["é😀", 1.0, {}]})")}}),
            "{\"k\": [\"é😀\", 1.0, {}]}|{\n  \"k\": [\n    \"é😀\",\n    1.0,\n    {}\n  ]\n}|"
            "{\"k\": [\"\\u00e9\\ud83d\\ude00\", 1.0, {}]}");
  EXPECT_EQ(render("{{ strftime_now('%d %b %Y') }} {{ strftime_now('%A %Y-%m-%d') }}"), "05 Jan 2025 Sunday 2025-01-05");
}

// tojson copies strings 16 bytes at a time and stops at the bytes JSON escapes: every length
// around the block size, with each kind of special byte at every position, against nlohmann's
// dump (the same escapes as Python's json.dumps: short forms, lowercase \u00XX, and with
// ensure_ascii every code point from DEL up, astral ones as surrogate pairs).
TEST(JinjaValues, TojsonEscapesStringsOfAnyLengthAsPythonDoes) {
  const JinjaTemplate dumps("{{ x | tojson }}|{{ x | tojson(ensure_ascii=true) }}");
  size_t checked = 0;
  for (const std::string special : {"\"", "\\", "\n", "\x01", "\x1f", "\x7f", "\u00e9", "\U0001f600", "/"}) {
    for (size_t length = 1; length <= 40; ++length) {
      for (size_t at = 0; at < length; ++at) {
        const std::string x = std::string(at, 'a') + special + std::string(length - at - 1, 'b');
        const json j = x;
        ASSERT_EQ(dumps.render(json{{"x", x}}), j.dump(-1, ' ', false) + "|" + j.dump(-1, ' ', true)) << length << " " << at;
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 9u * 820u);
  // Line breaks with indents of every width, also wider than the writer's buffer.
  EXPECT_EQ(render("{{ [[1]] | tojson(indent=0) }}"), "[\n[\n1\n]\n]");
  for (size_t indent : {1, 7, 16, 17, 3000}) {
    const std::string unit(indent, ' ');
    EXPECT_EQ(render("{{ [[1, {'k': 'v'}]] | tojson(indent=" + std::to_string(indent) + ") }}"),
              "[\n" + unit + "[\n" + unit + unit + "1,\n" + unit + unit + "{\n" + unit + unit + unit + "\"k\": \"v\"\n" +
                  unit + unit + "}\n" + unit + "]\n]");
  }
}

// x.key, x[key] and x[i] read a named dict's or list's value in place where nothing else can
// answer (a method of the same name, "_" names, misses and non-list receivers take the general path).
TEST(JinjaValues, ItemsReadInPlaceKeepJinjasLookupOrder) {
  const json vars = {{"d", {{"items", "v"}, {"role", "r"}, {"_p", "x"}, {"1", "s"}}}, {"xs", {"a", "b", "c"}}};
  EXPECT_EQ(render("{{ d.items is callable }}|{{ d['items'] }}|{{ d.role == 'r' }}|{{ d._p }}|{{ d['1'] }}|{{ d[1] is defined }}", vars),
            "True|v|True|x|s|False");
  EXPECT_EQ(render("{{ '<' + d.role + d['role'] + xs[-1] + xs[0] + xs[true] + '>' }}|{{ xs[3] is defined }}|{{ xs[-4] is defined }}", vars),
            "<rrcab>|False|False");
  EXPECT_EQ(render("{{ d.missing is defined }}|{{ d.missing }}|{{ xs.role is defined }}|{{ xs['a'] is defined }}", vars), "False||False|False");
  EXPECT_EQ(error_kind("{{ '<' + d.missing }}", vars), "UndefinedError");
  EXPECT_EQ(error_kind("{{ d.missing.deeper }}", vars), "UndefinedError");
}

TEST(JinjaWhitespace, TrimAndLstripBlocksAsTransformersConfiguresThem) {
  EXPECT_EQ(render("{% if true %}\n  yes\n{% endif %}\n"), "  yes\n");
  EXPECT_EQ(render("a\n    {% if true %}b{% endif %}\nc"), "a\nbc");
  EXPECT_EQ(render("a  {%- if true -%}  b  {%- endif %}"), "ab");
  EXPECT_EQ(render("a\n  {%+ if true %}b{% endif %}"), "a\n  b");
  EXPECT_EQ(render("{{ 'x' }}\n{# note #}\ny"), "x\ny");
  EXPECT_EQ(render("{% raw %}{{ not evaluated }}{% endraw %}"), "{{ not evaluated }}");
  EXPECT_EQ(render("one\r\ntwo\n"), "one\ntwo");
}

TEST(ChatTemplate, ContinueFinalMessageFollowsTransformers) {
  const JinjaTemplate t(
      "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}</{{ m.role }}>{% endfor %}"
      "{% if add_generation_prompt %}<assistant>{% endif %}");
  const json chat = json::parse(R"([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, "}])");
  ChatTemplateOptions o;
  o.continue_final_message = true;
  EXPECT_EQ(plugformer::render_chat_template(t, chat, o), "<user>Hi</user><assistant>Hello,");  // trimmed: rstrip
  o.add_generation_prompt = true;
  EXPECT_THROW(plugformer::render_chat_template(t, chat, o), TemplateError);
  ChatTemplateOptions tools;
  tools.tools = json::array({"not a schema"});
  EXPECT_THROW(plugformer::render_chat_template(t, chat, tools), TemplateError);
  ChatTemplateOptions docs;
  docs.documents = json::array({1});
  EXPECT_THROW(plugformer::render_chat_template(t, chat, docs), TemplateError);
  // A template that drops the final message cannot be continued.
  const JinjaTemplate drops("{% for m in messages[:-1] %}{{ m.content }}{% endfor %}");
  ChatTemplateOptions cont;
  cont.continue_final_message = true;
  EXPECT_THROW(plugformer::render_chat_template(drops, chat, cont), TemplateError);
}

}  // namespace

namespace {

// What a local libFuzzer run (ASan + UBSan, 1.2M executions) found, kept as regressions: a float
// too large for int64 in |int, a slice among several subscripts, objects kept past their scope
// (a macro held its defining scope strongly and leaked it; bound methods held raw pointers), and
// padding widths of gigabytes.
TEST(JinjaFuzzFindings, StayErrorsOrValues) {
  EXPECT_EQ(error_kind("{{ ('9' * 20) | int }}"), "OverflowError");
  EXPECT_EQ(error_kind("{{ 1e300 | int }}"), "OverflowError");
  EXPECT_EQ(render("{{ 0[:1, 2, 3] }}|"), "|");
  EXPECT_EQ(render("{% set ns = namespace() %}{% for i in [1] %}{% macro m() %}x{% endmacro %}{% set ns.m = m %}"
                   "{% set ns.c = loop.cycle %}{% endfor %}{{ ns.m() }}{{ ns.c('a', 'b') }}"
                   "{% set n = cycler(1, 2).next %}{{ n() }}{{ n() }}"),
            "xa12");
  EXPECT_EQ(render("{% macro f(n) %}{{ n }}{% if n > 0 %}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }}"), "3210");
  EXPECT_EQ(error_kind("{{ '%99999999999s' % 'a' }}"), "MemoryError");
  EXPECT_EQ(error_kind("{{ 'a'.center(10**12) }}"), "MemoryError");
  EXPECT_EQ(error_kind("{{ '{:99999999999}'.format('a') }}"), "MemoryError");
  EXPECT_EQ(error_kind("{{ '{99999999999999999999}'.format('a') }}"), "OverflowError");
}

}  // namespace
