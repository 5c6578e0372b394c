// Typed errors. Every failure a user can cause (bad path, bad JSON, wrong dtype, truncated
// file, unknown model_type, network error, ABI mismatch) throws one of these, with a message
// naming the file or field and what was expected.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

namespace plugformer {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A path that should exist does not (model dir, config.json, weights, tokenizer files).
class FileNotFoundError : public Error { using Error::Error; };
// A file exists but could not be read or written (permissions, I/O failure).
class IOError : public Error { using Error::Error; };
// config.json / generation_config.json / tokenizer_config.json: not JSON, missing or mistyped field.
class ConfigError : public Error { using Error::Error; };
// model_type not registered; the message lists the registered ones.
class UnknownModelTypeError : public ConfigError { using ConfigError::ConfigError; };
// Weights: corrupt or hostile safetensors, unreadable .bin, shape disagreeing with the config.
class CheckpointError : public Error { using Error::Error; };
// Registry misuse: duplicate registration without exist_ok, unknown class or task.
class RegistryError : public Error { using Error::Error; };
// A plugin file that cannot be used (not a library, no descriptor, ABI mismatch, register() threw).
class PluginError : public Error { using Error::Error; };
// tokenizer.json / vocab files that cannot be understood, or impossible tokenizer settings.
class TokenizerError : public Error { using Error::Error; };
// Inputs to forward() / generate() that are wrong (ids out of range, shapes disagree, settings invalid).
class InvalidInputError : public Error { using Error::Error; };
// A libtorch operation failed inside a model call (an operation this build of libtorch lacks for
// a dtype on this device, ...): the message names the module, the dtype and the operation.
class ComputationError : public Error { using Error::Error; };

// Hub access.
class HubError : public Error { using Error::Error; };
class HttpError : public HubError {
 public:
  HttpError(const std::string& message, long status) : HubError(message), status_(status) {}
  long status() const { return status_; }
 private:
  long status_;
};
class RepositoryNotFoundError : public HttpError { using HttpError::HttpError; };  // 401/404 on the repo
class GatedRepoError : public HttpError { using HttpError::HttpError; };          // 403: gated / no access
class RevisionNotFoundError : public HttpError { using HttpError::HttpError; };   // unknown branch/tag/commit
class EntryNotFoundError : public HttpError { using HttpError::HttpError; };      // file missing in the repo
// Offline mode (HF_HUB_OFFLINE / local_files_only) and the file is not in the cache.
class LocalEntryNotFoundError : public HubError { using HubError::HubError; };

// A Jinja / chat template failed. kind() names the exception Python's jinja2 raises in the same
// case ("TemplateSyntaxError", "UndefinedError", "TypeError", "SecurityError", ...; "TemplateError"
// for the template's own raise_exception, whose message is passed through verbatim).
class TemplateError : public Error {
 public:
  explicit TemplateError(const std::string& message, std::string kind = "TemplateError")
      : Error(message), kind_(std::move(kind)) {}
  const std::string& kind() const { return kind_; }

 private:
  std::string kind_;
};
// The template text does not parse; line and column (1-based) say where.
class TemplateSyntaxError : public TemplateError {
 public:
  TemplateSyntaxError(const std::string& message, int line, int column)
      : TemplateError(message, "TemplateSyntaxError"), line_(line), column_(column) {}
  int line() const { return line_; }
  int column() const { return column_; }

 private:
  int line_, column_;
};

}  // namespace plugformer
