// Fine-tunes the shipped stories260K model with a LoRA adapter on a small text file, printing the
// falling loss; saves the adapter in PEFT's format, loads it into a fresh copy of the base model
// and checks that the logits are reproduced.
//
//   lora_finetune [--model DIR] [--data FILE] [--out DIR] [--steps N]
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/optim/adamw.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <plugformer/auto.h>
#include <plugformer/peft.h>

using namespace plugformer;

int main(int argc, char** argv) {
  std::string model_dir = PLUGFORMER_EXAMPLE_MODEL_DIR, data = PLUGFORMER_EXAMPLE_DATA,
              out = (std::filesystem::temp_directory_path() / "plugformer_lora_adapter").string();
  int steps = 60;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--model") model_dir = argv[i + 1];
    else if (flag == "--data") data = argv[i + 1];
    else if (flag == "--out") out = argv[i + 1];
    else if (flag == "--steps") steps = std::stoi(argv[i + 1]);
    else {
      std::cerr << "usage: lora_finetune [--model DIR] [--data FILE] [--out DIR] [--steps N]\n";
      return 2;
    }
  }
  try {
    auto tokenizer = AutoTokenizer::from_pretrained(model_dir);
    std::ifstream in(data);
    if (!in) throw FileNotFoundError(data + ": cannot read the training text");
    std::stringstream text;
    text << in.rdbuf();
    const std::vector<int64_t> ids = tokenizer->encode(text.str()).ids;
    std::cout << data << ": " << ids.size() << " tokens\n";

    PeftConfig config;
    config.task_type = "CAUSAL_LM";
    config.r = 8;
    config.lora_alpha = 16;
    config.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj"};
    auto model = get_peft_model(AutoModelForCausalLM::from_pretrained(model_dir), config);
    model->print_trainable_parameters();

    std::vector<at::Tensor> trainable;
    for (const auto& p : model->parameters())
      if (p.requires_grad()) trainable.push_back(p);
    torch::optim::AdamW optimizer(trainable, torch::optim::AdamWOptions(5e-3));
    model->train();
    // Batches of random windows of the text; the same seed gives the same run.
    const int64_t window = 48, batch = 8;
    const at::Tensor all = at::tensor(ids, at::kLong);
    at::manual_seed(0);
    double first = 0, last = 0;
    for (int step = 1; step <= steps; ++step) {
      at::Tensor starts = at::randint(0, int64_t(ids.size()) - window, {batch}, at::kLong);
      std::vector<at::Tensor> rows;
      for (int64_t b = 0; b < batch; ++b) rows.push_back(all.narrow(0, starts[b].item<int64_t>(), window));
      at::Tensor input = at::stack(rows);
      optimizer.zero_grad();
      at::Tensor loss = model->forward({{"input_ids", input}, {"labels", input}})["loss"];
      loss.backward();
      optimizer.step();
      if (step == 1) first = loss.item<double>();
      last = loss.item<double>();
      if (step == 1 || step % 10 == 0) std::printf("step %3d  loss %.4f\n", step, last);
    }
    model->eval();
    model->save_pretrained(out);
    std::cout << "adapter saved to " << out << "\n";

    // A fresh base model with the saved adapter gives the same logits.
    auto reloaded = PeftModel::from_pretrained(AutoModelForCausalLM::from_pretrained(model_dir), out);
    const at::Tensor probe = all.narrow(0, 0, 32).unsqueeze(0);
    c10::InferenceMode guard;
    const double diff = (model->forward({{"input_ids", probe}})["logits"] -
                         reloaded->forward({{"input_ids", probe}})["logits"]).abs().max().item<double>();
    std::printf("reloaded adapter: max |logits difference| = %.3g\n", diff);
    if (!(last < first - 0.2)) {
      std::cerr << "the loss did not fall (" << first << " -> " << last << ")\n";
      return 1;
    }
    if (diff > 1e-5) {
      std::cerr << "the reloaded adapter gives other logits\n";
      return 1;
    }
    std::cout << "loss " << first << " -> " << last << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
