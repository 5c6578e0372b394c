// list, info, generate, forward.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include <boost/dll/runtime_symbol_info.hpp>

#include <plugformer/auto.h>
#include <plugformer/decoder.h>
#include <plugformer/error.h>
#include <plugformer/generation.h>
#include <plugformer/log.h>
#include <plugformer/peft.h>
#include <plugformer/plugin_loader.h>
#include <plugformer/runtime.h>
#include <plugformer/safetensors.h>

#include "commands.h"
#include "tensor_parallel_launch.h"

namespace plugformer::cli {

namespace {

// The shipped stories260K: next to an installed binary, else in the source tree it was built from.
std::string default_model_dir() {
  const auto exe = std::filesystem::path(boost::dll::program_location().string());
  const auto installed = exe.parent_path().parent_path() / "share/plugformer/models/stories260K";
  if (std::filesystem::is_directory(installed)) return installed.string();
  return PLUGFORMER_SOURCE_MODEL_DIR;
}

std::string join(const std::set<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
  return out.empty() ? "-" : out;
}

void run_list() {
  const auto& results = PluginLoader::load_default_plugins();
  const auto& registry = Registry::instance();
  std::cout << std::left << std::setw(28) << "PLUGIN FILE" << std::setw(12) << "FAMILY" << "ARCHITECTURES / TASKS / TOKENIZERS\n";
  auto print_source = [&](const std::string& file, const std::string& label) {
    std::set<std::string> families, archs, tasks_, toks;
    for (const auto& c : registry.configs())
      if (c.source == file) families.insert(c.model_type);
    for (const auto& m : registry.models())
      if (m.source == file) {
        archs.insert(m.architecture);
        tasks_.insert(m.task);
      }
    for (const auto& t : registry.tokenizers())
      if (t.source == file) toks.insert(t.class_name);
    std::cout << std::setw(28) << label << std::setw(12) << join(families) << join(archs) << "\n"
              << std::setw(40) << "" << "tasks: " << join(tasks_) << "\n"
              << std::setw(40) << "" << "tokenizers: " << join(toks) << "\n";
  };
  for (const auto& p : registry.plugins()) print_source(p.file, std::filesystem::path(p.file).filename().string());
  for (const auto& r : results)
    if (!r.loaded && !r.duplicate) std::cout << "refused: " << r.file.string() << ": " << r.reason << "\n";
  std::cout << "search path:";
  for (const auto& d : PluginLoader::search_path()) std::cout << " " << d.string();
  std::cout << "\n";
}

// A local folder with a config.json but no weight files (a config read from a model card, say).
bool config_only_folder(const std::string& path) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(path) || !fs::exists(fs::path(path) / "config.json")) return false;
  for (const char* file : {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                           "pytorch_model.bin.index.json"})
    if (fs::exists(fs::path(path) / file)) return false;
  return true;
}

void run_info(const std::string& model_path, const std::string& dtype) {
  PretrainedOptions options;
  options.torch_dtype = dtype;
  auto config = AutoConfig::from_pretrained(model_path, options);
  const bool structure_only = config_only_folder(model_path);
  ModelPtr model;
  if (structure_only) {
    // Without weights the model is built from config.json alone; its tensors stay unallocated
    // pages, so even a 70B config is counted without the memory.
    if (config->architectures.empty())
      throw ConfigError(model_path + "/config.json: no 'architectures' field to choose a model class");
    auto entry = Registry::instance().find_architecture(config->architectures.front());
    if (!entry) throw RegistryError("model class '" + config->architectures.front() + "' is not registered");
    model = Registry::instance().make_model(*entry, config);
    model->tie_weights();
  } else {
    model = load_model_for_architecture(model_path, options);
  }
  const json c = config->to_json();
  std::cout << "model_type:        " << config->model_type() << "\n"
            << "class:             " << model->class_name() << "\n";
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "num_key_value_heads", "max_position_embeddings"})
    if (c.contains(key) && !c[key].is_null()) std::cout << std::left << std::setw(19) << (std::string(key) + ":") << c[key].dump() << "\n";
  if (auto decoder = std::dynamic_pointer_cast<DecoderConfig>(config))
    for (const auto& [label, text] : describe_layout(decoder->decoder_layout()))
      std::cout << std::left << std::setw(19) << (label + ":") << text << "\n";
  std::cout << "parameters:        " << model->num_parameters() << " (" << model->num_parameters(false, true)
            << " without embeddings)\n";
  if (structure_only) {
    const std::string stored = config->torch_dtype.value_or("float32");
    const int64_t bytes = stored == "bfloat16" || stored == "float16" ? 2 : stored == "float64" ? 8 : 4;
    std::cout << "dtype:             " << stored << " (config.json; no weights in the folder)\n"
              << "memory footprint:  " << model->num_parameters() * bytes
              << " bytes of weights at that dtype\n";
  } else {
    std::cout << "dtype:             " << c10::toString(model->dtype()) << "\n"
              << "memory footprint:  " << model->memory_footprint() << " bytes\n";
  }
  // transformers' floating_point_ops for one token is the training cost (6 N); a forward pass is 2 N.
  ModelInputs one_token{{"input_ids", at::zeros({1, 1}, at::kLong)}};
  const double train_flops = model->floating_point_ops(one_token);
  std::cout << "FLOPs per token:   " << std::llround(train_flops / 3) << " forward, " << std::llround(train_flops)
            << " training (floating_point_ops)\n"
            << "cpu features:      " << cpu_features() << "\n"
            << "cpu kernels:       " << describe_cpu_kernels() << "\n";
}

struct GenerateArgs {
  std::string model, prompt = "Once upon a time", ids, adapter;
  bool json_output = false;
  SamplingArgs sampling;
  TensorParallelArgs parallel;
};

void run_generate(const GenerateArgs& args) {
  RankLauncher ranks;
  PretrainedOptions options;
  options.tensor_parallel = ranks.join(args.parallel);
  if (options.tensor_parallel && !args.adapter.empty())
    throw InvalidInputError("--adapter cannot be combined with --tensor-parallel (adapters are not split)");
  const bool leader = !options.tensor_parallel || options.tensor_parallel->rank() == 0;  // the rank that prints
  options.torch_dtype = args.sampling.dtype;
  options.quantization = args.sampling.quantize;
  // Encoder-decoder checkpoints (T5) generate from their Seq2SeqLM class, the others from CausalLM.
  const bool seq2seq = AutoConfig::from_pretrained(args.model, options)->is_encoder_decoder;
  ModelPtr model = seq2seq ? AutoModelForSeq2SeqLM::from_pretrained(args.model, options)
                           : AutoModelForCausalLM::from_pretrained(args.model, options);
  if (!args.adapter.empty()) model = PeftModel::from_pretrained(model, args.adapter);  // PEFT adapter on top
  GenerationConfig gen = generation_config_for(*model, args.model, options, args.sampling);

  std::vector<int64_t> prompt;
  std::shared_ptr<Tokenizer> tokenizer;
  if (!args.ids.empty()) {
    std::stringstream ss(args.ids);
    std::string part;
    while (std::getline(ss, part, ',')) {
      try {
        prompt.push_back(std::stoll(part));
      } catch (const std::exception&) {
        throw InvalidInputError("--ids: '" + part + "' is not an integer");
      }
    }
  }
  if (args.ids.empty() || !gen.stop_strings.empty()) tokenizer = AutoTokenizer::from_pretrained(args.model, options);
  if (args.ids.empty()) prompt = tokenizer->encode(args.prompt).ids;
  const at::Tensor input = at::tensor(prompt, at::kLong).unsqueeze(0);
  // Sequences start with the prompt, or for encoder-decoder models with decoder_start_token_id.
  // A decoder-only model's text is what decoding the whole sequence adds to decoding the prompt.
  const int64_t skip = seq2seq ? 1 : int64_t(prompt.size());
  const std::vector<int64_t> text_start = seq2seq ? std::vector<int64_t>{} : prompt;
  std::unique_ptr<DecodeStream> streamer;
  if (leader && tokenizer && args.ids.empty() && !args.json_output && gen.num_beams == 1) {
    if (!seq2seq) std::cout << args.prompt << std::flush;  // a decoder-only model continues the prompt
    streamer = std::make_unique<DecodeStream>(tokenizer, text_start);
  }
  TokenCallback stream;
  if (streamer) stream = [&](int64_t, int64_t token) {
    std::cout << streamer->step(token) << std::flush;
    return true;
  };
  const auto started = std::chrono::steady_clock::now();
  auto out = generate(*model, input, at::Tensor(), gen, stream, tokenizer.get());
  if (const auto& group = options.tensor_parallel)  // bench/tensor_parallel reads this line
    logger().info("tensor-parallel rank {}: generate took {:.3f} s, {} collectives took {:.3f} s", group->rank(),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(),
                  group->collective_count(), group->collective_seconds());
  if (!leader) return;
  ranks.wait();
  at::Tensor seq = out.sequences[0].contiguous();
  const std::vector<int64_t> generated(seq.data_ptr<int64_t>() + skip, seq.data_ptr<int64_t>() + seq.numel());
  auto generated_text = [&] {
    DecodeStream decoded(tokenizer, text_start);
    std::string text;
    for (int64_t id : generated) text += decoded.step(id);
    return text + decoded.finish();
  };
  if (args.json_output) {
    json result = {{"prompt_ids", prompt}, {"generated_ids", generated}};
    if (tokenizer) result["text"] = generated_text();
    std::cout << result.dump() << "\n";
  } else if (streamer) {
    std::cout << streamer->finish() << "\n";
  } else {
    std::cout << (tokenizer ? (seq2seq ? "" : args.prompt) + generated_text() : json(generated).dump()) << "\n";
  }
}

}  // namespace

GenerationConfig generation_config_for(const PreTrainedModel& model, const std::string& model_path,
                                       const PretrainedOptions& options, const SamplingArgs& args) {
  GenerationConfig gen = GenerationConfig::from_model_config(model.config());
  if (auto file = resolve_file(model_path, "generation_config.json", options, true))
    gen.update_from_json(read_json_file(*file), file->string());
  gen.max_new_tokens = args.max_new_tokens;
  if (args.do_sample) gen.do_sample = *args.do_sample;
  if (args.temperature) gen.temperature = *args.temperature;
  if (args.top_p) gen.top_p = *args.top_p;
  if (args.min_p) gen.min_p = *args.min_p;
  if (args.repetition_penalty) gen.repetition_penalty = *args.repetition_penalty;
  if (args.top_k) gen.top_k = *args.top_k;
  if (args.num_beams) gen.num_beams = *args.num_beams;
  if (args.no_repeat_ngram_size) gen.no_repeat_ngram_size = *args.no_repeat_ngram_size;
  if (args.seed) gen.seed = uint64_t(*args.seed);
  if (!args.stop.empty()) gen.stop_strings = args.stop;
  return gen;
}

void add_sampling_options(CLI::App* cmd, SamplingArgs& a) {
  cmd->add_option("--max-new-tokens", a.max_new_tokens, "Tokens to generate")->check(CLI::NonNegativeNumber);
  cmd->add_option("--dtype", a.dtype, "float32 | bfloat16 | float16 | auto");
  cmd->add_option("--quantize", a.quantize, "Weight-only quantization at load: int8");
  cmd->add_option("--do-sample", a.do_sample, "Sample instead of greedy (true/false)");
  cmd->add_option("--temperature", a.temperature, "Sampling temperature");
  cmd->add_option("--top-k", a.top_k, "Keep the k most likely tokens when sampling");
  cmd->add_option("--top-p", a.top_p, "Nucleus sampling mass");
  cmd->add_option("--min-p", a.min_p, "Min-p sampling threshold");
  cmd->add_option("--repetition-penalty", a.repetition_penalty, "Penalty for tokens already present");
  cmd->add_option("--no-repeat-ngram-size", a.no_repeat_ngram_size, "Forbid repeating n-grams of this size");
  cmd->add_option("--num-beams", a.num_beams, "Beam search with this many beams");
  cmd->add_option("--seed", a.seed, "Seed for sampling (same seed, same tokens)");
  cmd->add_option("--stop", a.stop, "Stop when the text ends with this string (repeatable)");
}

namespace {

void run_forward(const std::string& model_path, const std::string& cls, const std::string& inputs_file,
                 const std::string& out_file, const std::string& dtype) {
  PretrainedOptions options;
  options.architecture = cls;
  options.torch_dtype = dtype;
  auto model = load_model_for_architecture(model_path, options);
  auto file = SafetensorsFile::open(inputs_file);
  ModelInputs inputs;
  for (const auto& name : file->keys()) {
    at::Tensor t = file->get(name);
    if (t.scalar_type() != at::kLong && t.is_floating_point() == false)
      throw InvalidInputError(inputs_file + ": input '" + name + "' must be int64 (I64), got " + file->info(name).dtype);
    inputs.tensors[name] = t;
  }
  c10::InferenceMode guard;
  ModelOutput out = model->forward(inputs);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [name, t] : out.tensors) tensors.emplace_back(name, t);
  for (size_t i = 0; i < out.hidden_states.size(); ++i) tensors.emplace_back("hidden_states." + std::to_string(i), out.hidden_states[i]);
  save_safetensors(out_file, tensors);
  for (const auto& [name, t] : out.tensors) {
    std::cout << name << " [";
    for (int64_t d = 0; d < t.dim(); ++d) std::cout << (d ? ", " : "") << t.size(d);
    std::cout << "]\n";
  }
}

}  // namespace

void add_model_commands(CLI::App& app) {
  auto* list = app.add_subcommand("list", "Plugins and what they provide: families, architectures, tasks, tokenizers");
  list->callback(run_list);

  static std::string info_model, info_dtype;
  auto* info = app.add_subcommand("info", "Config summary, parameter count, dtype and memory footprint of a model");
  info->add_option("model", info_model, "Model directory")->required();
  info->add_option("--dtype", info_dtype, "float32 | bfloat16 | float16 | auto");
  info->callback([] { run_info(info_model, info_dtype); });

  static GenerateArgs gen;
  auto* generate_cmd = app.add_subcommand("generate", "Generate text from a prompt (decoder-only or encoder-decoder), streamed to the terminal");
  generate_cmd->add_option("model", gen.model, "Model directory (default: the shipped stories260K)");
  generate_cmd->add_option("prompt", gen.prompt, "Prompt text");
  generate_cmd->add_option("--adapter", gen.adapter, "PEFT adapter directory or Hub id (LoRA, prompt or prefix tuning)");
  generate_cmd->add_option("--ids", gen.ids, "Prompt token ids, comma separated (instead of text)");
  generate_cmd->add_flag("--json", gen.json_output, "Print prompt and generated ids as JSON");
  add_sampling_options(generate_cmd, gen.sampling);
  add_tensor_parallel_options(generate_cmd, gen.parallel);
  generate_cmd->callback([] {
    if (gen.model.empty()) gen.model = default_model_dir();
    run_generate(gen);
  });

  static std::string fwd_model, fwd_class, fwd_inputs, fwd_out, fwd_dtype;
  auto* forward = app.add_subcommand("forward", "One forward pass on named input tensors; writes every output tensor");
  forward->add_option("model", fwd_model, "Model directory")->required();
  forward->add_option("--class", fwd_class, "Model class (LlamaForCausalLM) or Auto class (AutoModelForCausalLM); "
                                            "default: config.json architectures");
  forward->add_option("--inputs", fwd_inputs, "safetensors file of named inputs (input_ids, attention_mask, decoder_input_ids, ...)")->required();
  forward->add_option("--out", fwd_out, "safetensors file to write the outputs to")->required();
  forward->add_option("--dtype", fwd_dtype, "float32 | bfloat16 | float16 | auto");
  forward->callback([] { run_forward(fwd_model, fwd_class, fwd_inputs, fwd_out, fwd_dtype); });
}

}  // namespace plugformer::cli
