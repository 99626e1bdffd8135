// An HTTP error a request handler throws: the status and the reason, sent as {"error": ...}.
#pragma once

#include <stdexcept>
#include <string>

namespace indim::service {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, const std::string& what) : std::runtime_error(what), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

}  // namespace indim::service
