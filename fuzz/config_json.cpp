// Any bytes as config.json, parsed into every config class the plugins register (types checked,
// values validated: sizes, rope_scaling through a real RotaryEmbedding, activations, ...), as
// AutoConfig does once model_type picked the class. A config that loads is then saved and must
// load again from what save_pretrained wrote, to the same text.
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "bert/config.h"
#include "distilbert/config.h"
#include "gemma/config.h"
#include "gemma2/config.h"
#include "gpt2/config.h"
#include "llama/config.h"
#include "mistral/config.h"
#include "modernbert/config.h"
#include "mpnet/config.h"
#include "phi3/config.h"
#include "qwen2/config.h"
#include "qwen3/config.h"
#include "roberta/config.h"
#include "t5/config.h"
#include "xlm_roberta/config.h"

#include "fuzz_target.h"

namespace {

using namespace plugformer;
using Factory = std::function<ConfigPtr()>;

template <class Config>
std::pair<const char*, Factory> config(const char* model_type) {
  return {model_type, [] { return std::make_shared<Config>(); }};
}

// One class per plugin (plugins/*/config.cpp, counted by CMake so a new plugin is not forgotten).
const std::vector<std::pair<const char*, Factory>> kConfigs = {
    config<bert::BertConfig>("bert"),          config<distilbert::DistilBertConfig>("distilbert"),
    config<gemma::GemmaConfig>("gemma"),       config<gemma2::Gemma2Config>("gemma2"),
    config<gpt2::GPT2Config>("gpt2"),          config<llama::LlamaConfig>("llama"),
    config<mistral::MistralConfig>("mistral"), config<modernbert::ModernBertConfig>("modernbert"),
    config<mpnet::MPNetConfig>("mpnet"),       config<phi3::Phi3Config>("phi3"),
    config<qwen2::Qwen2Config>("qwen2"),       config<qwen3::Qwen3Config>("qwen3"),
    config<roberta::RobertaConfig>("roberta"), config<t5::T5Config>("t5"),
    config<xlm_roberta::XLMRobertaConfig>("xlm-roberta")};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (kConfigs.size() != PLUGFORMER_FUZZ_PLUGIN_CONFIGS) {
    std::fprintf(stderr, "config_json lists %zu config classes but plugins/ has %d: add the new one\n", kConfigs.size(),
                 PLUGFORMER_FUZZ_PLUGIN_CONFIGS);
    std::exit(1);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string file = fuzz_input_file(data, size, "config.json");
  return run_fuzz_input([&] {
    const json values = read_json_file(file);
    // Label counts beyond a few thousand (1e6 are allowed) make up that many label names in every
    // class, saved and reloaded: seconds of work here, under the sanitizers, though linear (checked
    // with 256000 by Config.ManyLabelsLoadSaveAndReload). Such inputs would only be timeouts.
    constexpr int64_t kMaxFuzzedLabels = 4096;
    if (auto labels = values.find("num_labels");
        labels != values.end() && labels->is_number_integer() && labels->get<int64_t>() > kMaxFuzzedLabels)
      return;
    for (const auto& [model_type, make] : kConfigs) {
      const ConfigPtr loaded = make();
      try {
        loaded->update_from_json(values, file);
      } catch (const Error&) {
        continue;  // rejected for this class; the next one may take it
      }
      const std::string saved = loaded->to_json_string();
      const ConfigPtr again = make();
      try {
        again->update_from_json(parse_json_text(saved), "saved config.json");
      } catch (const Error& e) {
        fuzz_bug(std::string(model_type) + " config does not load from its own save: " + e.what());
      }
      if (again->to_json_string() != saved) fuzz_bug(std::string(model_type) + " config saves differently once reloaded");
    }
  });
}
