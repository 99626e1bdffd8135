// The journal: one JSON line per finished matrix, appended as the run goes, so an interrupted
// run can be resumed. Its first line records the inputs and settings it belongs to.
#pragma once

#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>

#include "indim/analyze.hpp"

namespace indim::detail {

using RecordKey = std::tuple<int, std::string, std::string>;  // tuned index, name, side

class Journal {
 public:
  /// Opens `path`. With `resume`, keeps the records of a journal whose header equals `header`
  /// (a different header is a UsageError) and drops a torn last line; otherwise starts afresh.
  Journal(std::string path, const nlohmann::json& header, bool resume);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  const std::map<RecordKey, MatrixResult>& previous() const { return previous_; }
  /// Appends one record and flushes it to the file.
  void append(const MatrixResult& r);

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
  std::map<RecordKey, MatrixResult> previous_;
};

}  // namespace indim::detail
