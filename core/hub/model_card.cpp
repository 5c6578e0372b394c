// Model cards: the `tags:` list of README.md's YAML front matter (huggingface_hub's ModelCard
// metadata), edited in place so the rest of the card stays byte for byte.
#include <algorithm>
#include <fstream>
#include <sstream>

#include <unistd.h>

#include "plugformer/error.h"
#include "plugformer/hub.h"

namespace fs = std::filesystem;

namespace plugformer::hub {

namespace {

fs::path card_path(const fs::path& folder_or_card) {
  std::error_code ec;
  if (fs::is_directory(folder_or_card, ec)) return folder_or_card / "README.md";
  return folder_or_card;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < s.size()) {
    size_t nl = s.find('\n', start);
    if (nl == std::string::npos) {
      lines.push_back(s.substr(start));
      break;
    }
    lines.push_back(s.substr(start, nl - start + 1));  // keeps the newline
    start = nl + 1;
  }
  return lines;
}

std::string chomp(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  return s.substr(b, e - b);
}

std::string unquote(std::string v) {
  v = trim(v);
  // Drop a trailing comment on a plain scalar.
  if (!v.empty() && v[0] != '"' && v[0] != '\'') {
    auto hash = v.find(" #");
    if (hash != std::string::npos) v = trim(v.substr(0, hash));
  }
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') {
    std::string out;
    for (size_t i = 1; i + 1 < v.size(); ++i) {
      if (v[i] == '\\' && i + 2 < v.size()) {
        ++i;
        out += v[i] == 'n' ? '\n' : v[i];
      } else {
        out += v[i];
      }
    }
    return out;
  }
  if (v.size() >= 2 && v.front() == '\'' && v.back() == '\'') {
    std::string out;
    for (size_t i = 1; i + 1 < v.size(); ++i) {
      out += v[i];
      if (v[i] == '\'' && v[i + 1] == '\'') ++i;
    }
    return out;
  }
  return v;
}

std::string yaml_scalar(const std::string& tag) {
  bool plain = !tag.empty();
  const std::string specials = ":#{}[],&*!|>'\"%@`";
  if (plain && (std::isspace(static_cast<unsigned char>(tag.front())) ||
                std::isspace(static_cast<unsigned char>(tag.back())) || tag.front() == '-' || tag.front() == '?'))
    plain = false;
  for (char c : tag)
    if (specials.find(c) != std::string::npos) plain = false;
  static const char* reserved[] = {"true", "false", "yes", "no", "null", "on", "off", "~"};
  std::string lower = tag;
  std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
  for (const char* r : reserved)
    if (lower == r) plain = false;
  if (plain && std::all_of(tag.begin(), tag.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)) || c == '.'; }))
    plain = false;
  if (plain) return tag;
  std::string out = "\"";
  for (char c : tag) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::vector<std::string> parse_flow_list(const std::string& v) {
  std::vector<std::string> out;
  std::string inner = trim(v);
  inner = inner.substr(1, inner.size() - 2);
  std::string cur;
  char quote = 0;
  for (char c : inner) {
    if (quote) {
      cur += c;
      if (c == quote) quote = 0;
    } else if (c == '"' || c == '\'') {
      quote = c;
      cur += c;
    } else if (c == ',') {
      if (!trim(cur).empty()) out.push_back(unquote(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!trim(cur).empty()) out.push_back(unquote(cur));
  return out;
}

struct Card {
  std::vector<std::string> lines;
  bool has_front_matter = false;
  size_t fm_end = 0;          // index of the closing '---' line
  size_t tags_begin = 0;      // [tags_begin, tags_end) lines of the tags entry
  size_t tags_end = 0;
  bool has_tags = false;
  std::vector<std::string> tags;
  std::string newline = "\n";
};

Card parse_card(const std::string& text) {
  Card card;
  card.lines = split_lines(text);
  if (text.find("\r\n") != std::string::npos) card.newline = "\r\n";
  if (card.lines.empty() || chomp(card.lines[0]) != "---") return card;
  for (size_t i = 1; i < card.lines.size(); ++i) {
    if (chomp(card.lines[i]) == "---") {
      card.has_front_matter = true;
      card.fm_end = i;
      break;
    }
  }
  if (!card.has_front_matter) return card;
  for (size_t i = 1; i < card.fm_end; ++i) {
    std::string line = chomp(card.lines[i]);
    if (line.rfind("tags:", 0) != 0) continue;
    card.has_tags = true;
    card.tags_begin = i;
    std::string value = trim(line.substr(5));
    size_t j = i + 1;
    if (value.empty()) {
      // Block list: "- a" lines (possibly indented), comments and blank lines inside.
      for (; j < card.fm_end; ++j) {
        std::string l = chomp(card.lines[j]);
        std::string t = trim(l);
        if (t.empty() || t[0] == '#') continue;
        if (t.rfind("- ", 0) == 0 || t == "-") {
          std::string item = unquote(t.substr(1));
          if (!item.empty()) card.tags.push_back(item);
          continue;
        }
        if (l[0] == ' ' || l[0] == '\t') continue;  // continuation of an item
        break;
      }
      // Trailing blank/comment lines belong to what follows.
      while (j > i + 1 && (trim(chomp(card.lines[j - 1])).empty() || trim(chomp(card.lines[j - 1]))[0] == '#')) --j;
    } else if (value.front() == '[' && value.back() == ']') {
      card.tags = parse_flow_list(value);
    } else if (value != "null" && value != "~") {
      card.tags.push_back(unquote(value));
    }
    card.tags_end = j;
    break;
  }
  return card;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw IOError("cannot read model card " + p.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::vector<std::string> read_model_tags(const fs::path& folder_or_card) {
  fs::path p = card_path(folder_or_card);
  std::error_code ec;
  if (!fs::exists(p, ec)) return {};
  return parse_card(read_file(p)).tags;
}

void add_model_tags(const fs::path& folder_or_card, const std::vector<std::string>& tags) {
  for (const auto& t : tags)
    if (t.empty() || t.find('\n') != std::string::npos || t.find('\r') != std::string::npos)
      throw InvalidInputError("invalid model card tag '" + t + "': empty or multi-line");
  const fs::path p = card_path(folder_or_card);
  std::error_code ec;
  const std::string text = fs::exists(p, ec) ? read_file(p) : std::string();
  Card card = parse_card(text);

  std::vector<std::string> merged = card.tags;
  for (const auto& t : tags)
    if (std::find(merged.begin(), merged.end(), t) == merged.end()) merged.push_back(t);
  if (card.has_tags && merged == card.tags) return;  // nothing to add

  const std::string& nl = card.newline;
  std::string block = "tags:" + nl;
  for (const auto& t : merged) block += "- " + yaml_scalar(t) + nl;

  std::string out;
  if (!card.has_front_matter) {
    out = "---" + nl + block + "---" + nl + text;
  } else {
    for (size_t i = 0; i < card.lines.size(); ++i) {
      if (card.has_tags && i == card.tags_begin) {
        out += block;
        i = card.tags_end - 1;
        continue;
      }
      if (!card.has_tags && i == card.fm_end) out += block;
      out += card.lines[i];
    }
  }
  fs::path tmp = p;
  tmp += ".tmp" + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << out;
    if (!f) throw IOError("cannot write model card " + p.string());
  }
  fs::rename(tmp, p, ec);
  if (ec) throw IOError("cannot write model card " + p.string() + ": " + ec.message());
}

}  // namespace plugformer::hub
