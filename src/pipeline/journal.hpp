// The journal: one JSON line per finished matrix, appended as the run goes, so an interrupted
// run can be resumed. Its first line records the inputs and settings it belongs to.
#pragma once

#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "indim/analyze.hpp"

namespace indim::detail {

using RecordKey = std::tuple<int, std::string, std::string>;  // tuned index, name, side

class Journal {
 public:
  /// With `resume`, reads the records of the journal at `path` whose header equals `header` (a
  /// different header, or a record that does not parse, is a UsageError naming the file and
  /// line) and drops a torn last line. The file itself is rewritten only when the run records
  /// its first matrix (or start() is called): a run that fails before leaves an old journal
  /// as it was.
  Journal(std::string path, nlohmann::json header, bool resume);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  const std::map<RecordKey, MatrixResult>& previous() const { return previous_; }
  /// Writes the header and the kept records, unless already done.
  void start();
  /// Appends one record and flushes it to the file.
  void append(const MatrixResult& r);

 private:
  std::string path_;
  nlohmann::json header_;
  std::vector<std::string> kept_;
  std::FILE* f_ = nullptr;
  std::map<RecordKey, MatrixResult> previous_;
};

}  // namespace indim::detail
