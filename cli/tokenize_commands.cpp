// plugformer tokenize / detokenize.
//   plugformer tokenize DIR "text"                       tokens and ids, one per line
//   plugformer tokenize DIR --input FILE --jsonl [--no-special-tokens]
//        FILE holds one JSON string per line ("..." with JSON escapes); writes one JSON object per
//        line: ids, tokens, offsets ([start, end] in Unicode code points), attention_mask,
//        special_tokens_mask, type_ids.
//   plugformer detokenize DIR --ids 1,2,3 [--skip-special-tokens]
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <plugformer/error.h>
#include <plugformer/tokenizer.h>

namespace {

struct TokenizeArgs {
  std::string dir;
  std::string text;
  std::string input;
  bool jsonl = false;
  bool no_special = false;
};

struct DetokenizeArgs {
  std::string dir;
  std::string ids;
  bool skip_special = false;
};

std::string dump_line(const plugformer::Encoding& e) {
  // Fixed key order for readability: ids, tokens, offsets, attention_mask, special_tokens_mask, type_ids.
  nlohmann::ordered_json j;
  nlohmann::json offsets = nlohmann::json::array();
  for (const auto& [s, en] : e.offsets) offsets.push_back({s, en});
  j["ids"] = e.ids;
  j["tokens"] = e.tokens;
  j["offsets"] = offsets;
  j["attention_mask"] = e.attention_mask;
  j["special_tokens_mask"] = e.special_tokens_mask;
  j["type_ids"] = e.type_ids;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void print_human(std::ostream& out, const plugformer::Encoding& e) {
  for (size_t i = 0; i < e.ids.size(); ++i)
    out << e.ids[i] << "\t" << nlohmann::json(e.tokens[i]).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
        << "\t[" << e.offsets[i].first << ", " << e.offsets[i].second << ")\n";
}

std::vector<std::string> read_texts(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw plugformer::FileNotFoundError(file + ": cannot open input file");
  std::vector<std::string> texts;
  std::string line;
  size_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error&) {
      throw plugformer::InvalidInputError(file + ":" + std::to_string(lineno) + ": expected a JSON string (\"...\") per line");
    }
    if (!j.is_string()) throw plugformer::InvalidInputError(file + ":" + std::to_string(lineno) + ": expected a JSON string, got " + j.type_name());
    texts.push_back(j.get<std::string>());
  }
  return texts;
}

std::vector<int64_t> parse_ids(const std::string& s) {
  std::vector<int64_t> ids;
  std::string cur;
  auto flush = [&]() {
    if (cur.empty()) return;
    size_t pos = 0;
    long long v = 0;
    try {
      v = std::stoll(cur, &pos);
    } catch (...) {
      pos = 0;
    }
    if (pos != cur.size()) throw plugformer::InvalidInputError("--ids: '" + cur + "' is not an integer");
    ids.push_back(v);
    cur.clear();
  };
  for (char c : s) {
    if (c == ',' || c == ' ' || c == '\t' || c == '[' || c == ']')
      flush();
    else
      cur.push_back(c);
  }
  flush();
  return ids;
}

}  // namespace

void add_tokenize_commands(CLI::App& app, std::function<std::shared_ptr<plugformer::Tokenizer>(const std::string& dir)> load) {
  auto targs = std::make_shared<TokenizeArgs>();
  CLI::App* tok = app.add_subcommand("tokenize", "Tokenize text with a model's tokenizer (tokens, ids, code point offsets)");
  tok->add_option("dir", targs->dir, "Tokenizer directory or hub repo id")->required();
  tok->add_option("text", targs->text, "Text to tokenize");
  tok->add_option("--input", targs->input, "File with one JSON string per line");
  tok->add_flag("--jsonl", targs->jsonl, "Write one JSON object per text");
  tok->add_flag("--no-special-tokens", targs->no_special, "Do not add the special tokens of the post-processor");
  tok->callback([targs, load]() {
    auto tokenizer = load(targs->dir);
    const bool add_special = !targs->no_special;
    std::vector<std::string> texts;
    if (!targs->input.empty()) {
      texts = read_texts(targs->input);
    } else {
      texts.push_back(targs->text);
    }
    auto encodings = tokenizer->encode_batch(texts, add_special);
    for (const auto& e : encodings) {
      if (targs->jsonl)
        std::cout << dump_line(e) << "\n";
      else
        print_human(std::cout, e);
    }
    std::cout.flush();
  });

  auto dargs = std::make_shared<DetokenizeArgs>();
  CLI::App* detok = app.add_subcommand("detokenize", "Decode token ids to text");
  detok->add_option("dir", dargs->dir, "Tokenizer directory or hub repo id")->required();
  detok->add_option("--ids", dargs->ids, "Comma-separated token ids, e.g. 1,2,3")->required();
  detok->add_flag("--skip-special-tokens", dargs->skip_special, "Leave special tokens out");
  detok->callback([dargs, load]() {
    auto tokenizer = load(dargs->dir);
    std::cout << tokenizer->decode(parse_ids(dargs->ids), dargs->skip_special) << "\n";
    std::cout.flush();
  });
}
