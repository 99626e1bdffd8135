// Strict JSON parsing for untrusted headers and configs (nlohmann-json's SAX parser underneath,
// building values itself so that duplicate keys are caught in linear time).
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace indim::detail {

/// Objects and arrays nested deeper than this are refused (no file indim reads needs 8).
constexpr int kMaxJsonDepth = 64;

/// Parses `text` as one JSON value surrounded only by whitespace. Rejects what nlohmann would
/// silently accept: NUL bytes (they end nlohmann's input), a byte-order mark, and duplicate keys at
/// any level; and nesting deeper than kMaxJsonDepth. Linear in the size of `text`. Throws
/// indim::BadInput("<what>: <problem>").
nlohmann::json parse_json_strict(std::string_view text, const std::string& what);
/// As above, keeping object keys in file order (where order carries meaning, as in PEFT's
/// rank_pattern: the first matching key wins).
nlohmann::ordered_json parse_json_strict_ordered(std::string_view text, const std::string& what);

/// Parses `text`, which must be a JSON object, handing each top-level member to `member` as soon
/// as it is complete and keeping none: memory stays bounded by the largest member, not the text.
/// Returns false (having called nothing after the failure) when the top level is not an object.
/// Same checks and errors as parse_json_strict.
bool for_each_json_member(std::string_view text, const std::string& what,
                          const std::function<void(const std::string&, nlohmann::json&&)>& member);

/// Reads a regular file of at most `max_bytes` and parses it strictly. Throws indim::BadInput
/// naming the file.
nlohmann::json read_json_file(const std::string& path, uint64_t max_bytes);
nlohmann::ordered_json read_json_file_ordered(const std::string& path, uint64_t max_bytes);

}  // namespace indim::detail
