// Tensor parallelism's bad input that needs no second process: torchrun's environment variables
// and checkpoint tensors of the wrong size for the plan.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <string>

#include <ATen/ATen.h>

#include <plugformer/distributed.h>
#include <plugformer/error.h>

#include "distributed/tensor_parallel.h"

namespace {

using Vars = std::map<std::string, std::optional<std::string>>;

// Sets RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT for the scope (the others unset).
class TorchrunEnv {
 public:
  explicit TorchrunEnv(const Vars& values) {
    for (const char* name : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}) {
      if (const char* old = std::getenv(name)) saved_[name] = old;
      auto it = values.find(name);
      if (it != values.end() && it->second) ::setenv(name, it->second->c_str(), 1);
      else ::unsetenv(name);
    }
  }
  TorchrunEnv(const TorchrunEnv&) = delete;
  TorchrunEnv& operator=(const TorchrunEnv&) = delete;
  ~TorchrunEnv() {
    for (const char* name : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}) {
      auto it = saved_.find(name);
      if (it != saved_.end()) ::setenv(name, it->second.c_str(), 1);
      else ::unsetenv(name);
    }
  }

 private:
  std::map<std::string, std::string> saved_;
};

std::string from_env_error(const Vars& values) {
  TorchrunEnv env(values);
  try {
    plugformer::DistributedOptions::from_env();
  } catch (const plugformer::DistributedError& e) {
    return e.what();
  }
  return "";
}

TEST(TensorParallelInput, TorchrunEnvironmentIsReadAndChecked) {
  {
    TorchrunEnv env(Vars{{"WORLD_SIZE", "2"}});
    EXPECT_FALSE(plugformer::DistributedOptions::from_env()) << "no RANK: not a torchrun launch";
  }
  {
    TorchrunEnv env(Vars{{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "29500"}});
    const auto o = plugformer::DistributedOptions::from_env();
    ASSERT_TRUE(o);
    EXPECT_EQ(o->rank, 1);
    EXPECT_EQ(o->world_size, 4);
    EXPECT_EQ(o->master_addr, "10.0.0.1");
    EXPECT_EQ(o->master_port, 29500);
  }
  EXPECT_NE(from_env_error({{"RANK", "0"}}).find("WORLD_SIZE is not set"), std::string::npos);
  EXPECT_NE(from_env_error({{"RANK", "0"}, {"WORLD_SIZE", "0"}}).find("WORLD_SIZE='0' must be an integer in [1,"),
            std::string::npos);
  EXPECT_NE(from_env_error({{"RANK", "2"}, {"WORLD_SIZE", "2"}}).find("RANK='2' must be an integer in [0, 1]"),
            std::string::npos);
  EXPECT_NE(from_env_error({{"RANK", "1x"}, {"WORLD_SIZE", "2"}}).find("RANK='1x'"), std::string::npos);
  EXPECT_NE(from_env_error({{"RANK", ""}, {"WORLD_SIZE", "2"}}).find("RANK is not set"), std::string::npos);
  EXPECT_NE(from_env_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}})
                .find("MASTER_PORT='70000' must be an integer in [0, 65535]"),
            std::string::npos);
  EXPECT_NE(from_env_error({{"RANK", "0"}, {"WORLD_SIZE", "99999999999999999999"}}).find("WORLD_SIZE="),
            std::string::npos);
}

TEST(TensorParallelInput, CheckpointTensorOfTheWrongSizeIsACheckpointError) {
  // Rank 1 of 2 of a colwise weight of 8 rows: rows 4..7.
  plugformer::TensorParallelSlice slice{0, 8, 4, {{4, 4}}};
  const at::Tensor right = at::arange(16, at::kFloat).reshape({8, 2});
  EXPECT_TRUE(at::equal(plugformer::take_slice(slice, right, "model.safetensors", "w"), right.narrow(0, 4, 4)));
  for (const at::Tensor& wrong : {at::zeros({6, 2}), at::zeros({8}).narrow(0, 0, 0), at::zeros({})}) {
    try {
      plugformer::take_slice(slice, wrong, "model.safetensors", "model.layers.0.mlp.up_proj.weight");
      ADD_FAILURE() << "shape " << wrong.sizes() << " accepted";
    } catch (const plugformer::CheckpointError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("model.safetensors: weight 'model.layers.0.mlp.up_proj.weight' has shape"), std::string::npos)
          << msg;
      EXPECT_NE(msg.find("expects 8 along dimension 0"), std::string::npos) << msg;
    }
  }
}

}  // namespace
