// chat-template: renders a chat template for JSON inputs (the fixtures' contract).
// chat: an interactive terminal chat with a model's chat template.
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include <unistd.h>

#include <ATen/ATen.h>

#include <plugformer/auto.h>
#include <plugformer/chat_template.h>
#include <plugformer/json_text.h>
#include <plugformer/error.h>
#include <plugformer/generation.h>

#include "commands.h"

namespace plugformer::cli {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileNotFoundError(path + ": cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// strftime_now's instant: PLUGFORMER_CHAT_TEMPLATE_NOW when set (reproducible renders).
std::string template_now() {
  const char* now = std::getenv("PLUGFORMER_CHAT_TEMPLATE_NOW");
  return now ? now : "";
}

// One input object: apply_chat_template's arguments; every other key is a template variable.
std::string render_input(const JinjaTemplate& chat_template, const nlohmann::ordered_json& input) {
  if (!input.is_object()) throw InvalidInputError("an input must be a JSON object with \"messages\"");
  if (!input.contains("messages")) throw InvalidInputError("an input has no \"messages\"");
  ChatTemplateOptions options;
  options.now = template_now();
  for (auto it = input.begin(); it != input.end(); ++it) {
    const std::string& key = it.key();
    if (key == "messages") continue;
    if (key == "tools") options.tools = it.value();
    else if (key == "documents") options.documents = it.value();
    else if (key == "add_generation_prompt" || key == "continue_final_message") {
      if (!it.value().is_boolean()) throw InvalidInputError("\"" + key + "\" must be true or false");
      (key == "add_generation_prompt" ? options.add_generation_prompt : options.continue_final_message) = it.value().get<bool>();
    } else {
      options.variables[key] = it.value();
    }
  }
  return render_chat_template(chat_template, input["messages"], options);
}

struct ChatTemplateArgs {
  std::string template_path, input_path;
  bool jsonl = false;
};

void run_chat_template(const ChatTemplateArgs& a) {
  const std::string source = read_file(a.template_path);
  const std::string input_text = read_file(a.input_path);
  if (!a.jsonl) {
    nlohmann::ordered_json input;
    try {
      input = plugformer::parse_json_text(input_text);
    } catch (const nlohmann::json::exception& e) {
      throw InvalidInputError(a.input_path + ": not JSON: " + e.what());
    }
    std::cout << render_input(JinjaTemplate(source), input);
    return;
  }
  // --jsonl: one result line per input line; a template that does not parse fails every line.
  std::optional<JinjaTemplate> chat_template;
  std::string compile_error;
  try {
    chat_template.emplace(source);
  } catch (const TemplateError& e) {
    compile_error = e.what();
  }
  std::istringstream lines(input_text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line == "\r") continue;
    nlohmann::ordered_json result = nlohmann::ordered_json::object();
    try {
      if (!chat_template) throw TemplateError(compile_error, "TemplateSyntaxError");
      nlohmann::ordered_json input;
      try {
        input = plugformer::parse_json_text(line);
      } catch (const nlohmann::json::exception& e) {
        throw InvalidInputError(std::string("input line is not JSON: ") + e.what());
      }
      result["text"] = render_input(*chat_template, input);
    } catch (const Error& e) {
      result = nlohmann::ordered_json{{"error", e.what()}};
    }
    std::cout << result.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
}


// What the template writes right after an assistant message, up to the first whitespace: its
// end-of-turn marker (<|eot_id|>, <|im_end|>, </s>, ...). Generation stops there.
std::string end_of_turn_marker(const Tokenizer& tokenizer) {
  const std::string probe = "PLUGFORMER_END_OF_TURN_PROBE";
  nlohmann::ordered_json chat = nlohmann::ordered_json::array(
      {{{"role", "user"}, {"content", "Hi"}}, {{"role", "assistant"}, {"content", probe}}});
  std::string text;
  try {
    text = tokenizer.apply_chat_template(chat);
  } catch (const Error&) {
    return "";  // a template that refuses the probe: stop on the model's EOS only
  }
  size_t at = text.rfind(probe);
  if (at == std::string::npos) return "";
  size_t begin = text.find_first_not_of(" \t\r\n", at + probe.size());
  if (begin == std::string::npos) return "";
  size_t end = text.find_first_of(" \t\r\n", begin);
  return text.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

struct ChatArgs {
  std::string model, system;
  SamplingArgs sampling;
};

void run_chat(const ChatArgs& a) {
  PretrainedOptions options;
  options.torch_dtype = a.sampling.dtype;
  options.quantization = a.sampling.quantize;
  auto tokenizer = AutoTokenizer::from_pretrained(a.model, options);
  if (tokenizer->chat_templates.empty())
    throw TokenizerError(a.model + ": the model has no chat template (tokenizer_config.json's chat_template or "
                         "chat_template.jinja); use `plugformer generate` for plain text");
  auto model = AutoModelForCausalLM::from_pretrained(a.model, options);
  GenerationConfig gen = generation_config_for(*model, a.model, options, a.sampling);
  const std::string marker = end_of_turn_marker(*tokenizer);
  if (!marker.empty()) gen.stop_strings.push_back(marker);
  const int64_t context = model->config().to_json().value("max_position_embeddings", int64_t{0});

  const bool interactive = ::isatty(STDIN_FILENO);
  std::string system = a.system;
  nlohmann::ordered_json history;
  auto reset = [&] {
    history = nlohmann::ordered_json::array();
    if (!system.empty()) history.push_back({{"role", "system"}, {"content", system}});
  };
  reset();
  if (interactive)
    std::cout << "plugformer chat: " << a.model << "\n/reset clears the history, /system TEXT sets the system prompt, "
              << "/quit or Ctrl-D ends.\n";
  std::string line;
  while (true) {
    if (interactive) std::cout << "> " << std::flush;
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (trim(line).empty()) continue;
    if (line == "/quit" || line == "/exit") break;
    if (line == "/reset") {
      reset();
      if (interactive) std::cout << "(history cleared)\n";
      continue;
    }
    if (line.rfind("/system", 0) == 0) {
      system = trim(line.substr(7));
      reset();
      if (interactive) std::cout << "(system prompt set, history cleared)\n";
      continue;
    }
    history.push_back({{"role", "user"}, {"content", line}});
    ChatTemplateOptions prompt_options;
    prompt_options.add_generation_prompt = true;
    std::vector<int64_t> ids = tokenizer->encode(tokenizer->apply_chat_template(history, prompt_options), false).ids;
    // The oldest turns leave the context first (the system prompt and the new message stay).
    const size_t first_turn = system.empty() ? 0 : 1;
    while (context > 0 && int64_t(ids.size()) + gen.max_new_tokens.value_or(0) > context && history.size() > first_turn + 1) {
      history.erase(history.begin() + static_cast<std::ptrdiff_t>(first_turn));
      ids = tokenizer->encode(tokenizer->apply_chat_template(history, prompt_options), false).ids;
    }
    // Streamed as it comes, except text that may be the start of the end-of-turn marker.
    DecodeStream stream(tokenizer, ids);
    std::string reply, pending;
    auto flush = [&](bool final) {
      size_t cut = marker.empty() ? std::string::npos : pending.find(marker);
      if (cut != std::string::npos) pending.resize(cut);
      size_t hold = 0;
      if (!final && cut == std::string::npos)
        for (size_t n = std::min(pending.size(), marker.size()); n > 0; --n)
          if (pending.compare(pending.size() - n, n, marker, 0, n) == 0) { hold = n; break; }
      std::string shown = pending.substr(0, pending.size() - hold);
      if (reply.empty()) shown.erase(0, shown.find_first_not_of(" \t\r\n") == std::string::npos ? shown.size() : shown.find_first_not_of(" \t\r\n"));
      std::cout << shown << std::flush;
      reply += shown;
      pending.erase(0, pending.size() - hold);
      return cut == std::string::npos;
    };
    TokenCallback on_token = [&](int64_t, int64_t token) {
      pending += stream.step(token);
      return flush(false);
    };
    generate(*model, at::tensor(ids, at::kLong).unsqueeze(0), at::Tensor(), gen, on_token, tokenizer.get());
    pending += stream.finish();
    flush(true);
    std::cout << "\n" << std::flush;
    history.push_back({{"role", "assistant"}, {"content", trim(reply)}});
  }
  if (interactive) std::cout << "\n";
}

}  // namespace

void add_chat_commands(CLI::App& app) {
  static ChatTemplateArgs template_args;
  auto* render = app.add_subcommand("chat-template", "Render a chat template (Jinja2, as transformers' apply_chat_template)");
  render->add_option("--template", template_args.template_path, "The template file (.jinja)")->required();
  render->add_option("--input", template_args.input_path,
                     "A JSON object {messages, add_generation_prompt, tools, ..., other template variables}")->required();
  render->add_flag("--jsonl", template_args.jsonl, "One input object per line in, one {\"text\"} or {\"error\"} per line out");
  render->callback([] { run_chat_template(template_args); });

  static ChatArgs chat_args;
  auto* chat = app.add_subcommand("chat", "Chat with a model in the terminal, with its chat template (one message per "
                                          "line when standard input is not a terminal)");
  chat->add_option("model", chat_args.model, "Model directory or Hub id")->required();
  chat->add_option("--system", chat_args.system, "System prompt");
  add_sampling_options(chat, chat_args.sampling);
  chat->callback([] { run_chat(chat_args); });
}

}  // namespace plugformer::cli
