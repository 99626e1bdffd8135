#include "pipeline/journal.hpp"

#include <cerrno>
#include <cstring>
#include <sstream>

#include "indim/error.hpp"
#include "io/atomic_file.hpp"
#include "io/regular_file.hpp"
#include "report/records.hpp"

namespace indim::detail {

namespace {
constexpr uint64_t kMaxJournalBytes = 16ull << 30;
}

Journal::Journal(std::string path, nlohmann::json header, bool resume)
    : path_(std::move(path)), header_(std::move(header)) {
  if (!resume || path_kind(path_) == PathKind::Missing) return;
  std::string text;
  try {
    text = read_regular_file(path_, kMaxJournalBytes);
  } catch (const BadInput& e) {
    throw UsageError(std::string(e.what()) + "; cannot resume from it");
  }
  std::istringstream in(text);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (n == 1) {
      if (j.is_discarded() || !j.contains("indim_journal"))
        throw UsageError(path_ + ": not an indim journal; remove it or run without --resume");
      if (j != header_)
        throw UsageError(path_ +
                         ": written by a run with other inputs or settings; remove it "
                         "or run without --resume");
      continue;
    }
    if (j.is_discarded() || !j.contains("record")) break;  // torn write at a crash: stop here
    try {
      MatrixResult r = record_from_json(j["record"]);
      previous_[{r.tuned_index, r.name, r.side}] = r;
    } catch (const Error& e) {
      throw UsageError(path_ + ": line " + std::to_string(n) + ": " + e.what() +
                       "; remove the journal or run without --resume");
    }
    kept_.push_back(line);
  }
}

Journal::~Journal() {
  if (f_ != nullptr) std::fclose(f_);
}

void Journal::start() {
  if (f_ != nullptr) return;
  // Rewrite header and surviving records, then append from there.
  std::string content = header_.dump() + "\n";
  for (const auto& l : kept_) content += l + "\n";
  write_file_atomic(path_, content);
  kept_.clear();
  f_ = std::fopen(path_.c_str(), "ab");
  if (f_ == nullptr) throw Error(path_ + ": cannot append: " + std::strerror(errno));
}

void Journal::append(const MatrixResult& r) {
  start();
  nlohmann::ordered_json j;
  j["record"] =
      record_to_json(r, /*primary_eps=*/0, /*plot=*/true);  // the intruder list is derived data
  const std::string line = j.dump() + "\n";
  if (std::fwrite(line.data(), 1, line.size(), f_) != line.size() || std::fflush(f_) != 0)
    throw Error(path_ + ": write failed: " + std::strerror(errno));
}

}  // namespace indim::detail
