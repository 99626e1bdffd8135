// safetensors reader. Validation follows the reference reader's order (safetensors
// `tensor.rs`): length prefix, header bytes, JSON, entries, then offsets sorted and contiguous
// from 0, sizes by checked multiplication, and the buffer ending exactly at the file's end.
#include "indim/safetensors.hpp"

#include <algorithm>
#include <string_view>

#include "indim/error.hpp"
#include "io/json_strict.hpp"
#include "io/mapped_file.hpp"

namespace indim {

std::string shape_text(const std::vector<uint64_t>& shape) {
  std::string t = "[";
  for (size_t i = 0; i < shape.size(); ++i) t += (i ? ", " : "") + std::to_string(shape[i]);
  return t + "]";
}

namespace {

constexpr uint64_t kMaxHeader = 100000000;  // the reference reader's N_MAX

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw BadInput(path + ": " + what, InputProblem::Malformed);
}

std::string quoted(const std::string& name) { return "tensor '" + name + "'"; }

// Returns the offset of the first byte that is not valid UTF-8, or npos.
size_t invalid_utf8_at(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return i;
    }
    if (i + len > s.size()) return i;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (cc & 0x3F);
    }
    const bool overlong =
        (len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
    if (overlong || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string_view::npos;
}

uint64_t unsigned_field(const nlohmann::json& v, const std::string& path, const std::string& name,
                        const char* field) {
  if (!v.is_number_unsigned())
    bad(path,
        quoted(name) + ": " + field + " holds " + v.dump() + ", which is not an unsigned integer");
  return v.get<uint64_t>();
}

TensorInfo parse_entry(const std::string& name, const nlohmann::json& e, const std::string& path,
                       std::vector<std::string>& warnings) {
  if (!e.is_object()) bad(path, quoted(name) + ": entry is not an object");
  for (const char* f : {"dtype", "shape", "data_offsets"})
    if (!e.contains(f)) bad(path, quoted(name) + ": missing field '" + f + "'");
  TensorInfo t;
  t.name = name;
  const auto& dt = e["dtype"];
  if (!dt.is_string()) bad(path, quoted(name) + ": dtype is not a string");
  auto parsed = parse_dtype(dt.get<std::string>());
  if (!parsed) bad(path, quoted(name) + ": unknown dtype \"" + dt.get<std::string>() + "\"");
  t.dtype = *parsed;
  const auto& shape = e["shape"];
  if (!shape.is_array()) bad(path, quoted(name) + ": shape is not an array");
  for (const auto& d : shape) t.shape.push_back(unsigned_field(d, path, name, "shape"));
  const auto& off = e["data_offsets"];
  if (!off.is_array() || off.size() != 2)
    bad(path, quoted(name) + ": data_offsets is not a pair [begin, end]");
  t.begin = unsigned_field(off[0], path, name, "data_offsets");
  t.end = unsigned_field(off[1], path, name, "data_offsets");
  if (t.end < t.begin)
    bad(path, quoted(name) + ": data_offsets [" + std::to_string(t.begin) + ", " +
                  std::to_string(t.end) + "] end before they begin");
  for (const auto& [k, _] : e.items())
    if (k != "dtype" && k != "shape" && k != "data_offsets")
      warnings.push_back(path + ": " + quoted(name) + ": unknown field '" + k + "' ignored");
  return t;
}

void parse_metadata(const nlohmann::json& m, const std::string& path,
                    std::map<std::string, std::string>& out) {
  if (!m.is_object()) bad(path, "__metadata__ is not an object");
  for (const auto& [k, v] : m.items()) {
    if (!v.is_string()) bad(path, "__metadata__ value for '" + k + "' is not a string");
    out[k] = v.get<std::string>();
  }
}

// Element count by overflow-checked multiplication; false on overflow.
bool checked_numel(const std::vector<uint64_t>& shape, uint64_t& out) {
  uint64_t n = 1;
  for (uint64_t d : shape)
    if (__builtin_mul_overflow(n, d, &n)) return false;
  out = n;
  return true;
}

}  // namespace

uint64_t TensorInfo::numel() const {
  uint64_t n = 0;
  checked_numel(shape, n);  // validated at parse time
  return n;
}

SafetensorsHeader parse_safetensors(const uint8_t* data, uint64_t size, const std::string& path) {
  SafetensorsHeader h;
  if (size < 8) bad(path, "file is " + std::to_string(size) + " bytes, too small for a header");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > kMaxHeader)
    bad(path, "header length " + std::to_string(n) + " exceeds the limit of 100000000 bytes");
  if (n > size - 8)
    bad(path, "header length " + std::to_string(n) + " runs past the end of the file (" +
                  std::to_string(size) + " bytes)");
  h.header_size = n;
  std::string_view text(reinterpret_cast<const char*>(data + 8), n);
  if (auto at = invalid_utf8_at(text); at != std::string_view::npos)
    bad(path, "header is not valid UTF-8 (byte " + std::to_string(at) + " of the header)");
  // Entries are validated as they are parsed and not kept as JSON: a header of a million
  // tensors parses in linear time and memory.
  const bool object = detail::for_each_json_member(
      text, path + ": header", [&](const std::string& key, nlohmann::json&& value) {
        if (key == "__metadata__")
          parse_metadata(value, path, h.metadata);
        else
          h.tensors.push_back(parse_entry(key, value, path, h.warnings));
      });
  if (!object) bad(path, "header is not a JSON object");

  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  for (const auto& t : h.tensors) {
    const std::string where = quoted(t.name) + ": data_offsets [" + std::to_string(t.begin) + ", " +
                              std::to_string(t.end) + "]";
    if (t.begin != expected)
      bad(path,
          where + (expected == 0 && t.begin != 0 ? " do not start at 0"
                   : t.begin > expected ? " leave a gap after byte " + std::to_string(expected)
                                        : " overlap the previous tensor"));
    uint64_t numel = 0, bits = 0;
    if (!checked_numel(t.shape, numel) ||
        __builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_bits(t.dtype)), &bits))
      bad(path, quoted(t.name) + ": shape overflows the element count");
    if (bits % 8 != 0)
      bad(path, quoted(t.name) + ": " + std::to_string(numel) + " " + dtype_name(t.dtype) +
                    " elements are not a whole number of bytes");
    if (t.end - t.begin != bits / 8)
      bad(path, where + " hold " + std::to_string(t.end - t.begin) + " bytes, but shape and " +
                    dtype_name(t.dtype) + " need " + std::to_string(bits / 8));
    expected = t.end;
  }
  if (expected + 8 + n != size)
    bad(path, "tensor data ends at byte " + std::to_string(expected + 8 + n) +
                  " but the file has " + std::to_string(size) +
                  " bytes (truncated, or data appended after the tensors)");
  return h;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path,
                                                       const detail::FileSource* files) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->map_ = std::make_shared<detail::MappedFile>(path, detail::files_or_plain(files));
  f->header_ = parse_safetensors(f->map_->data(), f->map_->size(), path);
  for (size_t i = 0; i < f->header_.tensors.size(); ++i)
    f->index_.emplace(f->header_.tensors[i].name, i);
  return f;
}

uint64_t SafetensorsFile::file_size() const { return map_->size(); }

int64_t SafetensorsFile::mtime() const { return map_->modified_ns() / 1000000000; }

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

const uint8_t* SafetensorsFile::data(const TensorInfo& t) const {
  return map_->data() + header_.data_start() + t.begin;
}

void SafetensorsFile::prefetch(const TensorInfo& t) const {
  map_->prefetch(header_.data_start() + t.begin, t.nbytes());
}

void SafetensorsFile::check_intact(const TensorInfo& t) const {
  map_->check_intact(path_ + ": tensor '" + t.name + "'");
}

void SafetensorsFile::release(const TensorInfo& t) const {
  map_->release(header_.data_start() + t.begin, t.nbytes());
}

}  // namespace indim
