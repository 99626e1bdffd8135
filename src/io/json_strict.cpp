#include "io/json_strict.hpp"

#include <unordered_set>
#include <vector>

#include "indim/error.hpp"
#include "io/regular_file.hpp"

namespace indim::detail {

namespace {

void check_text(std::string_view text, const std::string& what) {
  if (text.size() >= 3 && static_cast<unsigned char>(text[0]) == 0xEF &&
      static_cast<unsigned char>(text[1]) == 0xBB && static_cast<unsigned char>(text[2]) == 0xBF)
    throw BadInput(InputProblem::Malformed, what + ": starts with a byte-order mark");
  if (auto nul = text.find('\0'); nul != std::string_view::npos)
    throw BadInput(InputProblem::Malformed,
                   what + ": contains a NUL byte at offset " + std::to_string(nul));
}

// Builds the value from nlohmann's SAX events. nlohmann's own callback parser re-scans a parent
// object each time a child object ends, which made a header of 100k tensors take minutes; this
// keeps a key set per open object instead. With `member` set, the members of the top-level
// object are handed over one by one and not kept.
template <typename Json>
class StrictBuilder {
 public:
  using string_t = typename Json::string_t;
  using Member = std::function<void(const std::string&, Json&&)>;

  StrictBuilder(Json& root, const Member* member) : root_(root), member_(member) {}

  bool null() { return put(Json(nullptr)); }
  bool boolean(bool v) { return put(Json(v)); }
  bool number_integer(typename Json::number_integer_t v) { return put(Json(v)); }
  bool number_unsigned(typename Json::number_unsigned_t v) { return put(Json(v)); }
  bool number_float(typename Json::number_float_t v, const string_t&) { return put(Json(v)); }
  bool string(string_t& v) { return put(Json(std::move(v))); }
  bool binary(typename Json::binary_t& v) { return put(Json::binary(std::move(v))); }
  bool start_object(std::size_t) { return open(Json::object()); }
  bool start_array(std::size_t) { return open(Json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }
  bool key(string_t& k) {
    Frame& f = stack_.back();
    if (!f.keys.insert(k).second) {
      error_ = "duplicate key \"" + k.substr(0, 200) + "\"";
      return false;
    }
    f.key = std::move(k);
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
    error_ = std::string("invalid JSON: ") + e.what();
    return false;
  }

  const std::string& error() const { return error_; }
  bool not_object() const { return not_object_; }

 private:
  struct Frame {
    Json* value;
    std::unordered_set<std::string> keys;
    std::string key;
  };

  // Where a new value goes: the root, the member being built, or inside the open container.
  Json* slot() {
    if (stack_.empty()) return &root_;
    if (member_ != nullptr && stack_.size() == 1) return &pending_;
    Frame& f = stack_.back();
    if (f.value->is_array()) {
      f.value->push_back(Json());
      return &f.value->back();
    }
    return &(*f.value)[f.key];
  }
  bool put(Json&& v) {
    if (member_ != nullptr && stack_.empty()) return refuse_top_level();
    *slot() = std::move(v);
    return emit_if_member_done();
  }
  bool open(Json&& empty) {
    if (member_ != nullptr && stack_.empty() && !empty.is_object()) return refuse_top_level();
    if (static_cast<int>(stack_.size()) >= kMaxJsonDepth) {
      error_ = "nested deeper than " + std::to_string(kMaxJsonDepth) + " levels";
      return false;
    }
    Json* p = slot();
    *p = std::move(empty);
    stack_.push_back({p, {}, {}});
    return true;
  }
  bool close() {
    stack_.pop_back();
    return emit_if_member_done();
  }
  bool emit_if_member_done() {
    if (member_ == nullptr || stack_.size() != 1) return true;
    (*member_)(stack_.back().key, std::move(pending_));
    pending_ = Json();
    return true;
  }
  bool refuse_top_level() {
    not_object_ = true;
    return false;
  }

  Json& root_;
  const Member* member_;
  Json pending_;
  std::vector<Frame> stack_;
  std::string error_;
  bool not_object_ = false;
};

// Runs the parser; returns false when the top level is not an object in member mode.
template <typename Json>
bool run(std::string_view text, const std::string& what, Json& root,
         const typename StrictBuilder<Json>::Member* member) {
  check_text(text, what);
  StrictBuilder<Json> b(root, member);
  bool ok;
  try {
    ok = Json::sax_parse(text.begin(), text.end(), &b, nlohmann::json::input_format_t::json,
                         /*strict=*/true, /*ignore_comments=*/false);
  } catch (const nlohmann::json::exception& e) {
    throw BadInput(InputProblem::Malformed, what + ": invalid JSON: " + e.what());
  }
  if (ok) return true;
  if (b.not_object()) return false;
  throw BadInput(InputProblem::Malformed,
                 what + ": " + (b.error().empty() ? std::string("invalid JSON") : b.error()));
}

}  // namespace

nlohmann::json parse_json_strict(std::string_view text, const std::string& what) {
  nlohmann::json j;
  run<nlohmann::json>(text, what, j, nullptr);
  return j;
}

nlohmann::ordered_json parse_json_strict_ordered(std::string_view text, const std::string& what) {
  nlohmann::ordered_json j;
  run<nlohmann::ordered_json>(text, what, j, nullptr);
  return j;
}

bool for_each_json_member(std::string_view text, const std::string& what,
                          const std::function<void(const std::string&, nlohmann::json&&)>& member) {
  nlohmann::json unused;
  return run<nlohmann::json>(text, what, unused, &member);
}

nlohmann::json read_json_file(const std::string& path, uint64_t max_bytes) {
  return parse_json_strict(read_regular_file(path, max_bytes), path);
}

nlohmann::ordered_json read_json_file_ordered(const std::string& path, uint64_t max_bytes) {
  return parse_json_strict_ordered(read_regular_file(path, max_bytes), path);
}

}  // namespace indim::detail
