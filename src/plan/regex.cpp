#include "plan/regex.hpp"

#include <re2/re2.h>

#include "indim/error.hpp"

namespace indim::detail {

namespace {

std::shared_ptr<const re2::RE2> compile(const std::string& pattern, bool case_insensitive) {
  re2::RE2::Options o;
  o.set_log_errors(false);  // the caller reports the error with its own context
  o.set_case_sensitive(!case_insensitive);
  return std::make_shared<const re2::RE2>(pattern, o);
}

}  // namespace

Regex::Regex(const std::string& pattern, bool case_insensitive)
    : pattern_(pattern), re_(compile(pattern, case_insensitive)) {}

Regex::~Regex() = default;

bool Regex::ok() const { return re_->ok(); }

std::string Regex::error() const {
  if (re_->ok()) return "";
  std::string e = re_->error();
  if (e.find("invalid perl operator: (?<") != std::string::npos ||
      e.find("invalid perl operator: (?=") != std::string::npos ||
      e.find("invalid perl operator: (?!") != std::string::npos)
    e += " (look-around is not supported)";
  else if (e.find("invalid escape sequence: \\") != std::string::npos)
    e += " (back-references are not supported)";
  return e + "; indim's patterns use RE2 syntax";
}

bool Regex::search(std::string_view text) const {
  return re_->ok() && re2::RE2::PartialMatch(re2::StringPiece(text.data(), text.size()), *re_);
}

bool Regex::full_match(std::string_view text) const {
  return re_->ok() && re2::RE2::FullMatch(re2::StringPiece(text.data(), text.size()), *re_);
}

bool Regex::full_match(std::string_view text, std::initializer_list<std::string*> groups) const {
  if (!re_->ok() || static_cast<int>(groups.size()) > re_->NumberOfCapturingGroups()) return false;
  std::vector<re2::RE2::Arg> args;
  std::vector<const re2::RE2::Arg*> ptrs;
  args.reserve(groups.size());
  for (std::string* g : groups) args.emplace_back(g);
  for (const auto& a : args) ptrs.push_back(&a);
  for (std::string* g : groups) g->clear();
  return re2::RE2::FullMatchN(re2::StringPiece(text.data(), text.size()), *re_, ptrs.data(),
                              static_cast<int>(ptrs.size()));
}

std::vector<Regex> compile_option_patterns(const std::vector<std::string>& patterns,
                                           const std::string& flag) {
  std::vector<Regex> out;
  for (const auto& p : patterns) {
    out.emplace_back(p);
    if (!out.back().ok())
      throw UsageError(flag + " \"" + p.substr(0, 200) +
                       "\" is not a valid regex: " + out.back().error());
  }
  return out;
}

bool any_search(const std::vector<Regex>& rs, std::string_view text) {
  for (const auto& r : rs)
    if (r.search(text)) return true;
  return false;
}

}  // namespace indim::detail
