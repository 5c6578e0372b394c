// One rank of a tensor-parallel fixture check (tensor_parallel_test.cpp starts WORLD_SIZE of them
// with torchrun's variables). For each fixture named on the command line, every forward case runs
// on the split model and on the whole model in this process: outputs within 1e-4 of the whole
// model's and within the fixture's atol of Hugging Face's; every greedy generation gives
// Hugging Face's tokens; `--collectives` checks the group's collectives alone. Rank 0 prints one
// line per check ("ok ..." / "FAIL ...") and every rank exits 1 on a failure. With
// PLUGFORMER_TP_OWN_GROUP=1 the worker builds its own c10d store and Gloo group, as a host
// application would, and hands them to TensorParallelGroup.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cstdio>
#include <iostream>
#include <string>

#include <plugformer/auto.h>
#include <plugformer/distributed.h>
#include <plugformer/generation.h>
#include <plugformer/safetensors.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

using namespace plugformer;

namespace {

int failures = 0;
bool leader = true;

void report(bool ok, const std::string& what) {
  if (!ok) ++failures;
  if (leader) std::cout << (ok ? "ok   " : "FAIL ") << what << std::endl;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes()) return 1e30;
  return (a.to(at::kFloat) - b.to(at::kFloat)).abs().max().item<double>();
}

ModelPtr load(const std::string& dir, const std::string& architecture, std::shared_ptr<TensorParallelGroup> group) {
  PretrainedOptions options;
  options.architecture = architecture;
  options.tensor_parallel = std::move(group);
  return load_model_for_architecture(dir, options);
}

void check_fixture(const std::string& dir, const std::shared_ptr<TensorParallelGroup>& group) {
  const json spec = read_json_file(dir + "/expected.json");
  auto tensors = SafetensorsFile::open(dir + "/expected.safetensors");
  const double atol = spec.value("atol", 1e-4);
  const std::string name = dir.substr(dir.find_last_of('/') + 1);
  c10::InferenceMode guard;
  auto inputs_of = [&](const json& entry) {
    ModelInputs inputs;
    for (const auto& [kwarg, tensor] : entry["inputs"].items()) inputs.tensors[kwarg] = tensors->get(tensor.get<std::string>());
    return inputs;
  };
  for (const auto& [case_name, entry] : spec["cases"].items()) {
    const std::string arch = entry.value("architecture", spec["architecture"].get<std::string>());
    auto split = load(dir, arch, group);
    auto whole = load(dir, arch, nullptr);
    const ModelOutput a = split->forward(inputs_of(entry)), b = whole->forward(inputs_of(entry));
    for (const auto& [field, tensor] : entry["outputs"].items()) {
      // Positions the fixture masks out (padding) are compared too against the whole model.
      const double vs_whole = max_diff(a[field], b[field]);
      report(vs_whole <= 1e-4, name + " " + case_name + "." + field + " vs one process: " + std::to_string(vs_whole));
      if (entry["compare"].value(field, "all") == "all") {
        const double vs_hf = max_diff(a[field], tensors->get(tensor.get<std::string>()));
        report(vs_hf <= atol, name + " " + case_name + "." + field + " vs transformers: " + std::to_string(vs_hf));
      }
    }
  }
  if (!spec.contains("generate")) return;
  for (const auto& [case_name, entry] : spec["generate"].items()) {
    auto model = load(dir, entry.value("architecture", spec["architecture"].get<std::string>()), group);
    ModelInputs inputs = inputs_of(entry);
    GenerationConfig config;
    config.max_new_tokens = entry["max_new_tokens"].get<int64_t>();
    config.pad_token_id = model->config().pad_token_id;
    auto out = generate(*model, inputs.get("input_ids"), inputs.get("attention_mask"), config);
    const int64_t prompt = inputs.get("input_ids").size(1);
    const at::Tensor fresh = out.sequences.narrow(1, prompt, out.sequences.size(1) - prompt);
    const auto expected = entry["new_tokens"].get<std::vector<std::vector<int64_t>>>();
    bool same = fresh.size(0) == int64_t(expected.size());
    for (size_t r = 0; same && r < expected.size(); ++r)
      same = at::equal(fresh[int64_t(r)], at::tensor(expected[r], at::kLong));
    report(same, name + " generate " + case_name + " greedy tokens");
  }
}

// all-reduce / all-gather / broadcast of sizes on both sides of the transports' thresholds; every
// rank checks the exact result (sums of small integers are exact in fp32 in any order).
void check_collectives(TensorParallelGroup& group) {
  c10::InferenceMode guard;
  const int64_t world = group.size();
  for (const int64_t n : {1, 7, 8192, 8193, 100000, 1 << 22}) {
    const std::string size = std::to_string(n) + " elements on " + std::to_string(world) + " ranks";
    auto values_of = [&](int64_t rank) { return at::arange(n, at::kFloat).remainder(97) + float(rank * 100); };
    at::Tensor expected_sum = at::zeros({n}), expected_bf16_sum = at::zeros({n});  // bf16 travels as fp32
    std::vector<at::Tensor> blocks;
    for (int64_t r = 0; r < world; ++r) {
      expected_sum += values_of(r);
      expected_bf16_sum += values_of(r).to(at::kBFloat16).to(at::kFloat);
      blocks.push_back(values_of(r).reshape({1, n}));
    }
    at::Tensor sum = values_of(group.rank());
    group.all_reduce(sum);
    report(at::equal(sum, expected_sum), "all-reduce of " + size);
    at::Tensor half = values_of(group.rank()).to(at::kBFloat16);
    group.all_reduce(half);
    report(half.scalar_type() == at::kBFloat16 && at::equal(half, expected_bf16_sum.to(at::kBFloat16)), "bf16 all-reduce of " + size);
    report(at::equal(group.all_gather(values_of(group.rank()).reshape({1, n})), at::cat(blocks, 1)), "all-gather of " + size);
    at::Tensor sent = at::arange(n, at::kLong) * 3;
    at::Tensor received = group.rank() == 0 ? sent.clone() : at::zeros({n}, at::kLong);
    group.broadcast(received);
    report(at::equal(received, sent), "broadcast of " + size);
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    auto options = DistributedOptions::from_env();
    if (!options) throw DistributedError("start with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set");
    std::shared_ptr<TensorParallelGroup> group;
    if (const char* own = std::getenv("PLUGFORMER_TP_OWN_GROUP"); own && std::string(own) == "1") {
      c10d::TCPStoreOptions store_options;
      store_options.port = uint16_t(options->master_port);
      store_options.isServer = options->rank == 0;
      store_options.numWorkers = size_t(options->world_size);
      auto store = c10::make_intrusive<c10d::TCPStore>(options->master_addr, store_options);
      auto gloo = c10d::ProcessGroupGloo::Options::create();
      gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(options->master_addr));
      group = std::make_shared<TensorParallelGroup>(
          c10::make_intrusive<c10d::ProcessGroupGloo>(store, int(options->rank), int(options->world_size), gloo), store);
    } else {
      group = TensorParallelGroup::init(*options);
    }
    leader = group->rank() == 0;
    for (int i = 1; i < argc; ++i) {
      if (std::string(argv[i]) == "--collectives") check_collectives(*group);
      else check_fixture(argv[i], group);
    }
  } catch (const std::exception& e) {
    std::cerr << "rank " << (std::getenv("RANK") ? std::getenv("RANK") : "?") << ": error: " << e.what() << "\n";
    return 2;
  }
  return failures == 0 ? 0 : 1;
}
