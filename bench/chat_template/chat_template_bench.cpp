// Chat-template engine speed (plugformer side; jinja2_reference.py is the Python jinja2 side, run_bench.py
// runs both). (a) One template parsed once, one conversation rendered N times: median and mean
// microseconds per render. (b) Parsing every */template.jinja of a folder: milliseconds for all of
// them once, median over 20 rounds. Prints one JSON line.
// Usage: chat_template_bench --template FILE --conversation FILE --templates-dir DIR [--iterations N] [--print]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <plugformer/chat_template.h>

namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using json = nlohmann::ordered_json;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Characters as Python's len() counts them (code points), so both sides report the same number.
size_t utf8_chars(const std::string& s) {
  return std::count_if(s.begin(), s.end(), [](unsigned char c) { return (c & 0xC0) != 0x80; });
}
}  // namespace

int main(int argc, char** argv) try {
  std::string template_path, conversation_path, templates_dir;
  int iterations = 10000, rounds = 20;
  bool print = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--template") template_path = value();
    else if (a == "--conversation") conversation_path = value();
    else if (a == "--templates-dir") templates_dir = value();
    else if (a == "--iterations") iterations = std::stoi(value());
    else if (a == "--rounds") rounds = std::stoi(value());
    else if (a == "--print") print = true;
    else throw std::runtime_error("unknown argument " + a);
  }
  if (template_path.empty() || conversation_path.empty() || (templates_dir.empty() && !print) || iterations < 1 ||
      rounds < 1) {
    std::cerr << "usage: " << argv[0]
              << " --template FILE --conversation FILE --templates-dir DIR [--iterations N] [--rounds R] [--print]\n";
    return 2;
  }

  // The conversation file holds apply_chat_template's arguments; every other key is a variable.
  const json conv = json::parse(read_file(conversation_path));
  plugformer::ChatTemplateOptions options;
  options.now = "2025-01-05T07:08:09";  // the instant jinja2_reference.py's strftime_now uses
  for (const auto& [key, value] : conv.items()) {
    if (key == "messages") continue;
    if (key == "tools") options.tools = value;
    else if (key == "documents") options.documents = value;
    else if (key == "add_generation_prompt") options.add_generation_prompt = value.get<bool>();
    else if (key == "continue_final_message") options.continue_final_message = value.get<bool>();
    else options.variables[key] = value;
  }
  const json& messages = conv.at("messages");

  // (a) Render: parsed once, as transformers caches the compiled template.
  const plugformer::JinjaTemplate chat_template(read_file(template_path));
  std::string text = plugformer::render_chat_template(chat_template, messages, options);
  if (print) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    return 0;
  }
  for (int i = 0; i < 10; ++i) text = plugformer::render_chat_template(chat_template, messages, options);  // warm-up
  std::vector<double> render_us;
  render_us.reserve(iterations);
  for (int i = 0; i < iterations; ++i) {
    const auto t0 = Clock::now();
    const std::string out = plugformer::render_chat_template(chat_template, messages, options);
    render_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }

  // (b) Parse every template; sources are read beforehand so only parsing is timed. Parsed
  // templates are kept until the round's clock stops (as the Python side keeps its compiled ones).
  std::vector<fs::path> paths;
  for (const auto& entry : fs::directory_iterator(templates_dir))
    if (fs::is_regular_file(entry.path() / "template.jinja")) paths.push_back(entry.path() / "template.jinja");
  std::sort(paths.begin(), paths.end());
  std::vector<std::string> sources;
  for (const auto& p : paths) sources.push_back(read_file(p));
  std::vector<double> parse_ms;
  for (int r = 0; r < rounds; ++r) {
    std::vector<plugformer::JinjaTemplate> parsed;
    parsed.reserve(sources.size());
    const auto t0 = Clock::now();
    for (const auto& s : sources) parsed.emplace_back(s);
    parse_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }

  const json result = {{"render_us_median", median(render_us)},
                       {"render_us_mean", std::accumulate(render_us.begin(), render_us.end(), 0.0) / iterations},
                       {"output_chars", utf8_chars(text)},
                       {"parse_all_ms", median(parse_ms)},
                       {"templates", sources.size()}};
  std::cout << result.dump() << "\n";
  return 0;
} catch (const std::exception& e) {
  std::cerr << "chat_template_bench: " << e.what() << "\n";
  return 1;
}
