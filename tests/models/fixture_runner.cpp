#include "fixture_runner.h"

#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <plugformer/auto.h>
#include <plugformer/generation.h>
#include <plugformer/safetensors.h>

namespace plugformer::testing {

namespace {

std::string fixture_dir(const std::string& name) { return std::string(PLUGFORMER_FIXTURES_DIR) + "/models/" + name; }

void compare(const std::string& what, const at::Tensor& actual, const at::Tensor& expected, const at::Tensor& mask,
             double atol) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  at::Tensor a = actual.to(at::kFloat), e = expected.to(at::kFloat);
  EXPECT_TRUE(at::isfinite(a).all().item<bool>()) << what << " has non-finite values";
  at::Tensor diff = (a - e).abs();
  if (mask.defined()) {
    at::Tensor m = mask.to(at::kBool);
    while (m.dim() < diff.dim()) m = m.unsqueeze(-1);
    diff = diff.masked_fill(m.logical_not().expand_as(diff), 0.0);
  }
  const double max_diff = diff.max().item<double>();
  EXPECT_LE(max_diff, atol) << what << ": max |actual - expected| = " << max_diff;
}

}  // namespace

void check_model_fixture(const std::string& name, double atol_override) {
  const std::string dir = fixture_dir(name);
  const json spec = read_json_file(dir + "/expected.json");
  auto tensors = SafetensorsFile::open(dir + "/expected.safetensors");
  const double atol = atol_override > 0 ? atol_override : spec.value("atol", 1e-4);
  c10::InferenceMode guard;

  auto load = [&](const json& entry) {
    PretrainedOptions options;
    options.architecture = entry.value("architecture", spec["architecture"].get<std::string>());
    return load_model_for_architecture(dir, options);
  };
  auto inputs_of = [&](const json& entry) {
    ModelInputs inputs;
    for (const auto& [kwarg, tensor] : entry["inputs"].items()) inputs.tensors[kwarg] = tensors->get(tensor.get<std::string>());
    return inputs;
  };

  for (const auto& [case_name, entry] : spec["cases"].items()) {
    SCOPED_TRACE(name + " case " + case_name);
    auto model = load(entry);
    ModelOutput out = model->forward(inputs_of(entry));
    for (const auto& [field, tensor] : entry["outputs"].items()) {
      const std::string how = entry["compare"].value(field, "all");
      compare(case_name + "." + field, out[field], tensors->get(tensor.get<std::string>()),
              how == "all" ? at::Tensor() : tensors->get(how), atol);
    }
  }
  if (!spec.contains("generate")) return;
  for (const auto& [case_name, entry] : spec["generate"].items()) {
    SCOPED_TRACE(name + " generate " + case_name);
    auto model = load(entry);
    ModelInputs inputs = inputs_of(entry);
    GenerationConfig config;
    config.max_new_tokens = entry["max_new_tokens"].get<int64_t>();
    config.pad_token_id = model->config().pad_token_id;
    config.decoder_start_token_id = model->config().decoder_start_token_id;
    for (bool use_cache : {true, false}) {
      config.use_cache = use_cache;
      auto out = generate(*model, inputs.get("input_ids"), inputs.get("attention_mask"), config);
      // Encoder-decoder sequences are the decoder's: decoder_start_token_id, then the new tokens.
      const int64_t prompt = model->config().is_encoder_decoder ? 1 : inputs.get("input_ids").size(1);
      at::Tensor fresh = out.sequences.narrow(1, prompt, out.sequences.size(1) - prompt);
      const auto expected = entry["new_tokens"].get<std::vector<std::vector<int64_t>>>();
      ASSERT_EQ(fresh.size(0), int64_t(expected.size()));
      for (size_t b = 0; b < expected.size(); ++b) {
        at::Tensor row = fresh[int64_t(b)].contiguous();
        std::vector<int64_t> got(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
        EXPECT_EQ(got, expected[b]) << "row " << b << (use_cache ? " with" : " without") << " KV cache";
      }
      if (entry.contains("sequences_tensor"))
        EXPECT_TRUE(at::equal(out.sequences, tensors->get(entry["sequences_tensor"].get<std::string>())))
            << "sequences differ" << (use_cache ? " with" : " without") << " KV cache";
      if (entry.contains("scores_tensor") && use_cache) {
        at::Tensor scores = at::stack(out.scores, 1);
        compare(case_name + ".scores", scores, tensors->get(entry["scores_tensor"].get<std::string>()), at::Tensor(), atol);
      }
    }
  }
}

}  // namespace plugformer::testing
