#include "io/json_strict.hpp"

#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "indim/error.hpp"

namespace indim::detail {

namespace {
struct DuplicateKey {
  std::string key;
};
}  // namespace

namespace {

template <typename Json>
Json parse_impl(std::string_view text, const std::string& what) {
  if (text.size() >= 3 && static_cast<unsigned char>(text[0]) == 0xEF &&
      static_cast<unsigned char>(text[1]) == 0xBB && static_cast<unsigned char>(text[2]) == 0xBF)
    throw BadInput(what + ": starts with a byte-order mark");
  if (auto nul = text.find('\0'); nul != std::string_view::npos)
    throw BadInput(what + ": contains a NUL byte at offset " + std::to_string(nul));

  // One set of seen keys per open object; a key seen twice in the same object is rejected.
  std::vector<std::set<std::string>> open;
  typename Json::parser_callback_t cb = [&](int, typename Json::parse_event_t ev, Json& parsed) {
    using E = typename Json::parse_event_t;
    if (ev == E::object_start) {
      open.emplace_back();
    } else if (ev == E::object_end) {
      if (!open.empty()) open.pop_back();
    } else if (ev == E::key && !open.empty()) {
      auto key = parsed.template get<std::string>();
      if (!open.back().insert(key).second) throw DuplicateKey{key};
    }
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true,
                       /*ignore_comments=*/false);
  } catch (const DuplicateKey& d) {
    throw BadInput(what + ": duplicate key \"" + d.key + "\"");
  } catch (const nlohmann::json::exception& e) {
    throw BadInput(what + ": invalid JSON: " + e.what());
  }
}

}  // namespace

nlohmann::json parse_json_strict(std::string_view text, const std::string& what) {
  return parse_impl<nlohmann::json>(text, what);
}

nlohmann::ordered_json parse_json_strict_ordered(std::string_view text, const std::string& what) {
  return parse_impl<nlohmann::ordered_json>(text, what);
}

std::string read_small_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw BadInput(path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json read_json_file(const std::string& path) {
  return parse_json_strict(read_small_file(path), path);
}

nlohmann::ordered_json read_json_file_ordered(const std::string& path) {
  return parse_json_strict_ordered(read_small_file(path), path);
}

}  // namespace indim::detail
