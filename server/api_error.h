// An HTTP error with OpenAI's error object: {"error": {"message", "type", "param", "code"}}.
#pragma once

#include <string>

#include <nlohmann/json.hpp>
#include <plugformer/error.h>

namespace plugformer::server {

class ApiError : public Error {
 public:
  ApiError(int status, std::string message, std::string param = "", std::string code = "")
      : Error(message), status(status), param(std::move(param)), code(std::move(code)) {}
  int status;
  std::string param, code;

  // OpenAI's type for the status: invalid_request_error (4xx), rate limits, server errors.
  std::string type() const;
  nlohmann::json to_json() const;
};

// A 400 naming the request field that is wrong and what was expected.
inline ApiError bad_field(const std::string& field, const std::string& expected) {
  return ApiError(400, "'" + field + "' " + expected, field);
}

}  // namespace plugformer::server
