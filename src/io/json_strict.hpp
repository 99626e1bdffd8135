// Strict JSON parsing for untrusted headers and configs (nlohmann-json underneath).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace indim::detail {

/// Parses `text` as one JSON value surrounded only by whitespace. Rejects what nlohmann would
/// silently accept: NUL bytes (they end nlohmann's input), a byte-order mark, and duplicate keys at
/// any level. Throws indim::BadInput("<what>: <problem>").
nlohmann::json parse_json_strict(std::string_view text, const std::string& what);
/// As above, keeping object keys in file order (where order carries meaning, as in PEFT's
/// rank_pattern: the first matching key wins).
nlohmann::ordered_json parse_json_strict_ordered(std::string_view text, const std::string& what);

/// Reads a whole (small) file and parses it strictly. Throws indim::BadInput naming the file.
nlohmann::json read_json_file(const std::string& path);
nlohmann::ordered_json read_json_file_ordered(const std::string& path);
/// A small file's bytes. Throws indim::BadInput naming the file.
std::string read_small_file(const std::string& path);

}  // namespace indim::detail
