#include "pipeline/journal.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "indim/error.hpp"
#include "io/atomic_file.hpp"
#include "report/records.hpp"

namespace indim::detail {

Journal::Journal(std::string path, const nlohmann::json& header, bool resume)
    : path_(std::move(path)) {
  std::vector<std::string> kept;
  if (resume) {
    std::ifstream in(path_);
    std::string line;
    bool first = true;
    while (in && std::getline(in, line)) {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (first) {
        if (j.is_discarded() || !j.contains("indim_journal"))
          throw UsageError(path_ + ": not an indim journal; remove it or run without --resume");
        if (j != header)
          throw UsageError(path_ +
                           ": written by a run with other inputs or settings; remove it "
                           "or run without --resume");
        first = false;
        continue;
      }
      if (j.is_discarded() || !j.contains("record")) break;  // torn write at a crash: stop here
      MatrixResult r = record_from_json(j["record"]);
      previous_[{r.tuned_index, r.name, r.side}] = r;
      kept.push_back(line);
    }
  }
  // Rewrite header and surviving records, then append from there.
  std::string content = header.dump() + "\n";
  for (const auto& l : kept) content += l + "\n";
  write_file_atomic(path_, content);
  f_ = std::fopen(path_.c_str(), "ab");
  if (f_ == nullptr) throw Error(path_ + ": cannot append: " + std::strerror(errno));
}

Journal::~Journal() {
  if (f_ != nullptr) std::fclose(f_);
}

void Journal::append(const MatrixResult& r) {
  nlohmann::ordered_json j;
  j["record"] =
      record_to_json(r, /*primary_eps=*/0, /*plot=*/true);  // the intruder list is derived data
  const std::string line = j.dump() + "\n";
  if (std::fwrite(line.data(), 1, line.size(), f_) != line.size() || std::fflush(f_) != 0)
    throw Error(path_ + ": write failed: " + std::strerror(errno));
}

}  // namespace indim::detail
