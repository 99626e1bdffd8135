// Regular expressions over untrusted names and patterns: RE2, which matches in time linear in
// the text and without recursion, so a 100k-character tensor name or a pathological pattern
// cannot exhaust the stack or the CPU. Syntax: RE2's, close to Python's `re` (which PEFT uses)
// except that back-references and look-around are refused when compiled.
#pragma once

#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace re2 {
class RE2;
}

namespace indim::detail {

class Regex {
 public:
  /// Compiles `pattern`; check ok() / error() before matching (a failed one matches nothing).
  explicit Regex(const std::string& pattern, bool case_insensitive = false);
  ~Regex();
  Regex(const Regex&) = default;
  Regex& operator=(const Regex&) = default;

  bool ok() const;
  /// Why the pattern does not compile, "" when it does.
  std::string error() const;
  /// The pattern matches somewhere in `text` (Python's re.search).
  bool search(std::string_view text) const;
  /// The pattern matches the whole of `text` (Python's re.fullmatch).
  bool full_match(std::string_view text) const;
  /// The same, storing the capture groups in order ("" for a group that did not take part).
  bool full_match(std::string_view text, std::initializer_list<std::string*> groups) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  std::shared_ptr<const re2::RE2> re_;
};

/// Compiles command-line patterns; throws indim::UsageError naming `flag` for one that does not.
std::vector<Regex> compile_option_patterns(const std::vector<std::string>& patterns,
                                           const std::string& flag);

/// True when any of `rs` is found in `text`.
bool any_search(const std::vector<Regex>& rs, std::string_view text);

}  // namespace indim::detail
