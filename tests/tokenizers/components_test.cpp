// Components the fixture tokenizers do not exercise, checked against expectations taken from the
// Rust library's own unit tests (tokenizers v0.22.2, src/pre_tokenizers/*.rs, src/decoders/*.rs,
// src/normalizers/*.rs): Whitespace, WhitespaceSplit, Digits, Metaspace, Punctuation, Split
// behaviours, ByteLevel options, CharDelimiterSplit, decoders ByteFallback / Strip / CTC / BPE,
// and normalizers NFD/NFKC/StripAccents/Strip/Lowercase.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "plugformer/error.h"
#include "tokenizers/components.h"

using nlohmann::json;
using namespace plugformer::tok;

namespace {

using Splits = std::vector<std::pair<std::string, Offsets>>;

// PreTokenizedString::get_splits(Original | Normalized, Byte).
Splits splits(const json& pretok, const std::string& text, bool normalized_offsets = false) {
  auto p = make_pre_tokenizer(pretok, "test");
  PreTokenizedString s(text);
  p->pre_tokenize(s);
  Splits out;
  size_t off = 0;
  for (auto& sp : s.splits()) {
    Offsets o = sp.normalized.offsets_original();
    if (normalized_offsets) {
      o = {off, off + sp.normalized.len()};
      off += sp.normalized.len();
    }
    out.emplace_back(sp.normalized.get(), o);
  }
  return out;
}

std::vector<std::string> decode_chain(const json& dec, std::vector<std::string> tokens) {
  make_decoder(dec, "test")->decode_chain(tokens);
  return tokens;
}

std::string normalize(const json& n, const std::string& text, Offsets* first_char_original = nullptr) {
  NormalizedString s(text);
  make_normalizer(n, "test")->normalize(s);
  if (first_char_original && !s.get().empty()) {
    size_t l = utf8_len(static_cast<unsigned char>(s.get()[0]));
    *first_char_original = *s.convert_normalized(0, l);
  }
  return s.get();
}

TEST(PreTokenizers, Whitespace) {
  EXPECT_EQ(splits({{"type", "Whitespace"}}, "Hey man!"), (Splits{{"Hey", {0, 3}}, {"man", {4, 7}}, {"!", {7, 8}}}));
  EXPECT_EQ(splits({{"type", "Whitespace"}}, "How are you doing?"),
            (Splits{{"How", {0, 3}}, {"are", {4, 7}}, {"you", {8, 11}}, {"doing", {12, 17}}, {"?", {17, 18}}}));
  EXPECT_EQ(splits({{"type", "Whitespace"}}, "\n"), Splits{});
  EXPECT_EQ(splits({{"type", "WhitespaceSplit"}}, "Hey, man, Good?"),
            (Splits{{"Hey,", {0, 4}}, {"man,", {5, 9}}, {"Good?", {10, 15}}}));
}

TEST(PreTokenizers, Digits) {
  EXPECT_EQ(splits({{"type", "Digits"}, {"individual_digits", false}}, "Hey 123 friend!"),
            (Splits{{"Hey ", {0, 4}}, {"123", {4, 7}}, {" friend!", {7, 15}}}));
  EXPECT_EQ(splits({{"type", "Digits"}, {"individual_digits", true}}, "Hey 123 friend!"),
            (Splits{{"Hey ", {0, 4}}, {"1", {4, 5}}, {"2", {5, 6}}, {"3", {6, 7}}, {" friend!", {7, 15}}}));
}

TEST(PreTokenizers, Metaspace) {
  const json m = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "always"}, {"split", true}};
  EXPECT_EQ(splits(m, "Hey friend!", true), (Splits{{"\u2581Hey", {0, 6}}, {"\u2581friend!", {6, 16}}}));
  EXPECT_EQ(splits(m, "Hey friend!"), (Splits{{"\u2581Hey", {0, 3}}, {"\u2581friend!", {3, 11}}}));
  EXPECT_EQ(splits(m, "Hey   friend!", true),
            (Splits{{"\u2581Hey", {0, 6}}, {"\u2581", {6, 9}}, {"\u2581", {9, 12}}, {"\u2581friend!", {12, 22}}}));
  EXPECT_EQ(splits(m, "Hey   friend!"),
            (Splits{{"\u2581Hey", {0, 3}}, {"\u2581", {3, 4}}, {"\u2581", {4, 5}}, {"\u2581friend!", {5, 13}}}));
  const json never = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "never"}, {"split", false}};
  EXPECT_EQ(splits(never, "Hey friend"), (Splits{{"Hey\u2581friend", {0, 10}}}));
  // Legacy add_prefix_space=false contradicting the declared scheme is refused, like serde does.
  EXPECT_THROW(make_pre_tokenizer({{"type", "Metaspace"}, {"replacement", "_"}, {"add_prefix_space", false}, {"prepend_scheme", "always"}}, "m"),
               plugformer::TokenizerError);
}

TEST(PreTokenizers, Punctuation) {
  EXPECT_EQ(splits({{"type", "Punctuation"}}, "Hey friend!     How are you?!?"),
            (Splits{{"Hey friend", {0, 10}}, {"!", {10, 11}}, {"     How are you", {11, 27}}, {"?", {27, 28}}, {"!", {28, 29}}, {"?", {29, 30}}}));
}

TEST(PreTokenizers, SplitBehaviours) {
  auto split = [](const char* behavior) {
    return json{{"type", "Split"}, {"pattern", {{"Regex", "\\w+|[^\\w\\s]+"}}}, {"behavior", behavior}, {"invert", true}};
  };
  const std::string s = "How are you doing?";
  EXPECT_EQ(splits(split("Removed"), s),
            (Splits{{"How", {0, 3}}, {"are", {4, 7}}, {"you", {8, 11}}, {"doing", {12, 17}}, {"?", {17, 18}}}));
  EXPECT_EQ(splits(split("Isolated"), s), (Splits{{"How", {0, 3}}, {" ", {3, 4}}, {"are", {4, 7}}, {" ", {7, 8}}, {"you", {8, 11}},
                                                  {" ", {11, 12}}, {"doing", {12, 17}}, {"?", {17, 18}}}));
  EXPECT_EQ(splits(split("MergedWithPrevious"), s),
            (Splits{{"How ", {0, 4}}, {"are ", {4, 8}}, {"you ", {8, 12}}, {"doing", {12, 17}}, {"?", {17, 18}}}));
  EXPECT_EQ(splits(split("MergedWithNext"), s),
            (Splits{{"How", {0, 3}}, {" are", {3, 7}}, {" you", {7, 11}}, {" doing", {11, 17}}, {"?", {17, 18}}}));
  EXPECT_EQ(splits(split("Contiguous"), s), (Splits{{"How", {0, 3}}, {" ", {3, 4}}, {"are", {4, 7}}, {" ", {7, 8}}, {"you", {8, 11}},
                                                    {" ", {11, 12}}, {"doing?", {12, 18}}}));
  EXPECT_EQ(splits({{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Removed"}, {"invert", false}}, "a b  c"),
            (Splits{{"a", {0, 1}}, {"b", {2, 3}}, {"c", {5, 6}}}));
  EXPECT_EQ(splits({{"type", "CharDelimiterSplit"}, {"delimiter", "-"}}, "a-b--c"), (Splits{{"a", {0, 1}}, {"b", {2, 3}}, {"c", {5, 6}}}));
}

TEST(PreTokenizers, ByteLevelOptions) {
  const std::string s = "Hello my friend, how is your day going?";
  EXPECT_EQ(splits({{"type", "ByteLevel"}, {"add_prefix_space", false}}, s),
            (Splits{{"Hello", {0, 5}}, {"\u0120my", {5, 8}}, {"\u0120friend", {8, 15}}, {",", {15, 16}}, {"\u0120how", {16, 20}},
                    {"\u0120is", {20, 23}}, {"\u0120your", {23, 28}}, {"\u0120day", {28, 32}}, {"\u0120going", {32, 38}}, {"?", {38, 39}}}));
  EXPECT_EQ(splits({{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", false}}, s),
            (Splits{{"\u0120Hello\u0120my\u0120friend,\u0120how\u0120is\u0120your\u0120day\u0120going?", {0, 39}}}));
  const Splits expected{{"\u0120Hello", {0, 7}}, {"\u0120my", {7, 11}}, {"\u0120friend", {11, 19}}, {",", {19, 20}},
                        {"\u0120how", {20, 25}},  {"\u0120is", {25, 29}}, {"\u0120your", {29, 35}},   {"\u0120day", {35, 40}},
                        {"\u0120going", {40, 47}}, {"?", {47, 48}}};
  EXPECT_EQ(splits({{"type", "ByteLevel"}, {"add_prefix_space", true}}, " " + s, true), expected);
  EXPECT_EQ(splits({{"type", "ByteLevel"}, {"add_prefix_space", true}}, s, true), expected);
}

TEST(Decoders, ByteFallback) {
  const json d = {{"type", "ByteFallback"}};
  EXPECT_EQ(decode_chain(d, {"Hey", "friend!"}), (std::vector<std::string>{"Hey", "friend!"}));
  EXPECT_EQ(decode_chain(d, {"<0x61>"}), (std::vector<std::string>{"a"}));
  EXPECT_EQ(decode_chain(d, {"<0xE5>"}), (std::vector<std::string>{"\uFFFD"}));
  EXPECT_EQ(decode_chain(d, {"<0xE5>", "<0x8f>"}), (std::vector<std::string>{"\uFFFD", "\uFFFD"}));
  EXPECT_EQ(decode_chain(d, {"<0xE5>", "<0x8f>", "<0xab>"}), (std::vector<std::string>{"\u53EB"}));
  EXPECT_EQ(decode_chain(d, {"<0xE5>", "<0x8f>", "<0xab>", "a"}), (std::vector<std::string>{"\u53EB", "a"}));
  EXPECT_EQ(decode_chain(d, {"<0xE5>", "<0x8f>", "a"}), (std::vector<std::string>{"\uFFFD", "\uFFFD", "a"}));
}

TEST(Decoders, StripCtcBpeWordPieceMetaspace) {
  EXPECT_EQ(decode_chain({{"type", "Strip"}, {"content", "H"}, {"start", 1}, {"stop", 0}}, {"Hey", " friend!", "HHH"}),
            (std::vector<std::string>{"ey", " friend!", "HH"}));
  EXPECT_EQ(decode_chain({{"type", "Strip"}, {"content", "y"}, {"start", 0}, {"stop", 1}}, {"Hey", " friend!"}),
            (std::vector<std::string>{"He", " friend!"}));
  std::vector<std::string> ctc_in;
  for (const char* t : {"<pad>", "<pad>", "h", "e", "e", "l", "l", "<pad>", "l", "o", "o", "o", "<pad>", "<pad>", "|", "<pad>", "w",
                        "o", "o", "o", "r", "<pad>", "<pad>", "l", "l", "d", "<pad>", "<pad>", "<pad>", "<pad>"})
    ctc_in.push_back(t);
  EXPECT_EQ(decode_chain({{"type", "CTC"}}, ctc_in), (std::vector<std::string>{"h", "e", "l", "l", "o", " ", "w", "o", "r", "l", "d"}));
  EXPECT_EQ(decode_chain({{"type", "BPEDecoder"}, {"suffix", "</w>"}}, {"My</w>", "na", "me</w>", "is</w>", "Jo", "hn</w>"}),
            (std::vector<std::string>{"My ", "na", "me ", "is ", "Jo", "hn"}));
  EXPECT_EQ(decode_chain({{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}, {"I", "'", "m", "hap", "##py", "!"}),
            (std::vector<std::string>{"I", " '", " m", " hap", "py", "!"}));
  EXPECT_EQ(decode_chain({{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "always"}}, {"\u2581Hey", "\u2581friend!"}),
            (std::vector<std::string>{"Hey", " friend!"}));
  EXPECT_EQ(decode_chain({{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "never"}}, {"\u2581Hey", "\u2581friend!"}),
            (std::vector<std::string>{" Hey", " friend!"}));
  EXPECT_EQ(decode_chain({{"type", "ByteLevel"}}, {"Hello", "\u0120my", "\u0120friend", ","}), (std::vector<std::string>{"Hello my friend,"}));
}

TEST(Normalizers, UnicodeStripLowercase) {
  Offsets first;
  // NFD splits é into e + U+0301; both keep the alignment of the original é (bytes 0..2).
  EXPECT_EQ(normalize({{"type", "NFD"}}, "\u00e9t\u00e9", &first), "e\u0301te\u0301");
  EXPECT_EQ(first, (Offsets{0, 2}));
  EXPECT_EQ(normalize({{"type", "NFC"}}, "e\u0301te\u0301"), "\u00e9t\u00e9");
  EXPECT_EQ(normalize({{"type", "NFKC"}}, "\uFB01ne \u2460"), "fine 1");
  EXPECT_EQ(normalize({{"type", "NFKD"}}, "\u00bd"), "1\u20442");
  EXPECT_EQ(normalize({{"type", "Sequence"}, {"normalizers", json::array({{{"type", "NFD"}}, {{"type", "StripAccents"}}})}}, "caf\u00e9 na\u00efve"),
            "cafe naive");
  EXPECT_EQ(normalize({{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}}, "  hello \t\n"), "hello");
  EXPECT_EQ(normalize({{"type", "Strip"}, {"strip_left", false}, {"strip_right", true}}, "  hello  "), "  hello");
  EXPECT_EQ(normalize({{"type", "Lowercase"}}, "\u0130STANBUL \u00c9T\u00c9"), "i\u0307stanbul \u00e9t\u00e9");
  EXPECT_EQ(normalize({{"type", "Replace"}, {"pattern", {{"Regex", "\\s+"}}}, {"content", " "}}, "a \t\n b"), "a b");
  EXPECT_EQ(normalize({{"type", "Prepend"}, {"prepend", "\u2581"}}, "hi"), "\u2581hi");
  EXPECT_EQ(normalize({{"type", "Prepend"}, {"prepend", "\u2581"}}, ""), "");
  EXPECT_EQ(normalize({{"type", "BertNormalizer"}, {"lowercase", true}}, "H\u00e9llo\u4e2d\u00ad\tX"), "hello \u4e2d  x");
}

TEST(Models, WordLevelAndUnigramByteFallback) {
  auto wl = make_model({{"type", "WordLevel"}, {"vocab", {{"<unk>", 0}, {"hello", 1}}}, {"unk_token", "<unk>"}}, "m");
  std::vector<Token> out;
  wl->tokenize("hello", out);
  wl->tokenize("world", out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].id, 1u);
  EXPECT_EQ(out[1].id, 0u);
  EXPECT_EQ(out[1].value, "<unk>");
  json vocab = json::array({json::array({"<unk>", 0.0}), json::array({"a", -1.0}), json::array({"ab", -1.5}), json::array({"b", -2.0})});
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    vocab.push_back(json::array({buf, -5.0}));
  }
  auto ug = make_model({{"type", "Unigram"}, {"unk_id", 0}, {"vocab", vocab}, {"byte_fallback", true}}, "m");
  out.clear();
  ug->tokenize("ab\u00e9", out);
  ASSERT_EQ(out.size(), 3u);  // "ab" + the two UTF-8 bytes of é as byte tokens
  EXPECT_EQ(out[0].value, "ab");
  EXPECT_EQ(out[1].value, "<0xC3>");
  EXPECT_EQ(out[2].value, "<0xA9>");
  EXPECT_EQ(out[1].offsets, (Offsets{2, 4}));
  auto ug2 = make_model({{"type", "Unigram"}, {"vocab", json::array({json::array({"a", -1.0})})}}, "m");
  out.clear();
  EXPECT_THROW(ug2->tokenize("b", out), plugformer::TokenizerError);  // unknown char and no unk_id
}

}  // namespace
