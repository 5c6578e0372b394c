#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstring>
#include <cstdio>
#include <unistd.h>

#include <plugformer/error.h>
#include <plugformer/safetensors.h>

#include "test_util.h"

using namespace plugformer;

namespace {

// A file with an arbitrary header text and data section; `declared` overrides the length field.
void write_raw(const std::filesystem::path& file, const std::string& header, size_t data_bytes,
               std::optional<uint64_t> declared = std::nullopt) {
  std::string bytes(8, '\0');
  const uint64_t n = declared.value_or(header.size());
  std::memcpy(bytes.data(), &n, 8);
  bytes += header;
  bytes.append(data_bytes, '\0');
  test::write_file(file, bytes);
}

std::string open_error(const std::filesystem::path& file) {
  try {
    SafetensorsFile::open(file);
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Safetensors, RoundTripsEveryDtype) {
  test::TempDir dir("st-roundtrip");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (auto type : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16, at::kLong, at::kInt, at::kShort, at::kChar,
                    at::kByte, at::kBool})
    tensors.emplace_back(std::string("t_") + c10::toString(type), (at::arange(12) % 5).reshape({3, 4}).to(type));
  tensors.emplace_back("scalar", at::tensor(3.5));
  tensors.emplace_back("empty", at::empty({0, 4}));
  save_safetensors(dir / "all.safetensors", tensors, {{"format", "pt"}});
  auto file = SafetensorsFile::open(dir / "all.safetensors");
  EXPECT_EQ(file->metadata().at("format"), "pt");
  for (const auto& [name, t] : tensors) {
    at::Tensor back = file->get(name);
    EXPECT_EQ(back.scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(at::equal(back, t)) << name;
  }
  EXPECT_EQ(file->info("t_Float").dtype, "F32");
  EXPECT_EQ(file->info("t_BFloat16").dtype, "BF16");
}

TEST(Safetensors, TensorsAreViewsIntoTheMapping) {
  test::TempDir dir("st-zero-copy");
  save_safetensors(dir / "w.safetensors", {{"w", at::ones({64, 64})}});
  at::Tensor a, b;
  {
    auto file = SafetensorsFile::open(dir / "w.safetensors");
    a = file->get("w");
    b = file->get("w");
  }
  // Same memory, and it stays valid after the file object is gone.
  EXPECT_EQ(a.data_ptr(), b.data_ptr());
  EXPECT_EQ(a.sum().item<float>(), 64.0f * 64.0f);
  // Copy-on-write: writing to a view never changes the file.
  a.fill_(2.0);
  EXPECT_EQ(SafetensorsFile::open(dir / "w.safetensors")->get("w").sum().item<float>(), 64.0f * 64.0f);
}

// Weights files changed under a loaded model (README "Reliability"): replacing or deleting the
// file (how the hub client and `cp new && mv` change files) leaves the loaded tensors as they
// were; truncating it in place ends the process with a message naming the file, never a wrong answer.
TEST(SafetensorsMapped, ReplacedOrDeletedFileLeavesLoadedTensorsIntact) {
  test::TempDir dir("st-replaced");
  const auto file = dir / "w.safetensors";
  save_safetensors(file, {{"w", at::arange(1 << 18, at::kFloat)}});
  const at::Tensor w = SafetensorsFile::open(file)->get("w");
  const at::Tensor before = w.clone();
  save_safetensors(dir / "new.safetensors", {{"w", at::zeros({1 << 18})}});
  std::filesystem::rename(dir / "new.safetensors", file);
  EXPECT_TRUE(at::equal(w, before));
  std::filesystem::remove(file);
  EXPECT_TRUE(at::equal(w, before));
}

TEST(SafetensorsMapped, TruncatedInPlaceIsALoudStopNamingTheFile) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  test::TempDir dir("st-truncated");
  const auto file = dir / "w.safetensors";
  save_safetensors(file, {{"w", at::arange(1 << 20, at::kFloat)}});
  EXPECT_DEATH(
      {
        const at::Tensor w = SafetensorsFile::open(file)->get("w");
        if (::truncate(file.c_str(), 4096) != 0) std::abort();
        // This child re-ran the test and made its own directory, which it dies too soon to remove;
        // the mapping outlives the unlinked file.
        std::filesystem::remove_all(dir.path());
        std::printf("%f\n", w.sum().item<double>());  // never printed: the pages are gone
      },
      "w.safetensors was truncated while a loaded model maps it");
}

TEST(Safetensors, WriterLeavesNoPartialFile) {
  test::TempDir dir("st-atomic");
  EXPECT_THROW(save_safetensors(dir / "x.safetensors", {{"a", at::ones({2})}, {"a", at::ones({2})}}), CheckpointError);
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(SafetensorsHostile, TruncatedFile) {
  test::TempDir dir("st-truncated");
  test::write_file(dir / "t.safetensors", "abc");
  EXPECT_NE(open_error(dir / "t.safetensors").find("truncated"), std::string::npos);
  // Valid header, data cut short.
  save_safetensors(dir / "full.safetensors", {{"w", at::ones({16})}});
  const auto size = std::filesystem::file_size(dir / "full.safetensors");
  std::filesystem::resize_file(dir / "full.safetensors", size - 8);
  EXPECT_NE(open_error(dir / "full.safetensors").find("outside the data section"), std::string::npos);
}

TEST(SafetensorsHostile, HeaderLengthBeyondFile) {
  test::TempDir dir("st-header-len");
  write_raw(dir / "h.safetensors", "{}", 0, 1000);
  EXPECT_NE(open_error(dir / "h.safetensors").find("runs past the end"), std::string::npos);
}

TEST(SafetensorsHostile, HugeHeader) {
  test::TempDir dir("st-huge");
  write_raw(dir / "h.safetensors", "{}", 0, uint64_t(1) << 40);
  EXPECT_NE(open_error(dir / "h.safetensors").find("limit"), std::string::npos);
}

TEST(SafetensorsHostile, OverlappingOffsets) {
  test::TempDir dir("st-overlap");
  write_raw(dir / "o.safetensors",
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12);
  EXPECT_NE(open_error(dir / "o.safetensors").find("overlaps"), std::string::npos);
}

TEST(SafetensorsHostile, OutOfBoundsOffsets) {
  test::TempDir dir("st-oob");
  write_raw(dir / "o.safetensors", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8);
  EXPECT_NE(open_error(dir / "o.safetensors").find("outside the data section"), std::string::npos);
}

TEST(SafetensorsHostile, UnknownDtype) {
  test::TempDir dir("st-dtype");
  write_raw(dir / "d.safetensors", R"({"a":{"dtype":"F13","shape":[1],"data_offsets":[0,4]}})", 4);
  EXPECT_NE(open_error(dir / "d.safetensors").find("unknown dtype 'F13'"), std::string::npos);
}

TEST(SafetensorsHostile, ShapeSizeMismatch) {
  test::TempDir dir("st-shape");
  write_raw(dir / "s.safetensors", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8);
  EXPECT_NE(open_error(dir / "s.safetensors").find("need 12"), std::string::npos);
  write_raw(dir / "o.safetensors",
            R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", 8);
  EXPECT_NE(open_error(dir / "o.safetensors").find("overflow"), std::string::npos);
}

TEST(SafetensorsHostile, GapsAndGarbage) {
  test::TempDir dir("st-gap");
  write_raw(dir / "g.safetensors", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8);
  EXPECT_NE(open_error(dir / "g.safetensors").find("gap"), std::string::npos);
  write_raw(dir / "j.safetensors", "{not json", 0);
  EXPECT_NE(open_error(dir / "j.safetensors").find("not valid JSON"), std::string::npos);
  write_raw(dir / "n.safetensors", R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4);
  EXPECT_NE(open_error(dir / "n.safetensors").find("non-negative"), std::string::npos);
  EXPECT_THROW(SafetensorsFile::open(dir / "missing.safetensors"), FileNotFoundError);
}
