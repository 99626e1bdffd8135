// Cache file layout (little-endian):
//   "INDIMSVD" | u32 version (1) | u32 meta length | meta JSON |
//   f64 sigma[n] | left vectors (dim x count, f32 or f64) | right vectors | u64 XXH3-64 of all
//   the bytes before it.
#include "indim/cache.hpp"

#define XXH_INLINE_ALL
#include <sys/stat.h>
#include <unistd.h>
#include <utime.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "indim/error.hpp"
#include "io/atomic_file.hpp"
#include "io/regular_file.hpp"

namespace fs = std::filesystem;

namespace indim {

namespace {

constexpr char kMagic[8] = {'I', 'N', 'D', 'I', 'M', 'S', 'V', 'D'};
constexpr uint32_t kVersion = 1;
constexpr const char* kSuffix = ".isvd";

template <typename T>
void put(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

nlohmann::json vectors_meta(const Vectors& v) {
  if (v.count == 0) return nullptr;
  return {{"dim", v.dim}, {"count", v.count}};
}

void put_vectors(std::string& out, const Vectors& v) {
  if (v.count == 0) return;
  std::visit(
      [&](const auto& x) {
        out.append(reinterpret_cast<const char*>(x.data()), x.size() * sizeof(x[0]));
      },
      v.data);
}

// An entry's bytes read from its file straight into their destinations, hashed as they pass:
// the vectors are copied once, and no buffer holds the whole file.
class EntryReader {
 public:
  EntryReader(const detail::Fd& f, uint64_t size) : fd_(f.get()), size_(size) {
    XXH3_64bits_reset(state_.get());
  }
  /// Bytes left before the trailing checksum.
  uint64_t left() const { return size_ - 8 - at_; }
  /// The next n bytes into dst; false when they would run into the checksum or the file shrank.
  bool take(void* dst, uint64_t n) {
    if (n > left()) return false;
    auto* out = static_cast<char*>(dst);
    for (uint64_t done = 0; done < n;) {
      const uint64_t want = std::min<uint64_t>(n - done, 1u << 20);  // hashed while in cache
      const ssize_t got = ::read(fd_, out + done, want);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return false;
      XXH3_64bits_update(state_.get(), out + done, static_cast<size_t>(got));
      done += static_cast<uint64_t>(got);
    }
    at_ += n;
    return true;
  }
  /// True when every byte was taken and the trailing checksum matches them.
  bool checksum_matches() {
    uint64_t sum = 0;
    for (size_t done = 0; done < sizeof sum;) {
      const ssize_t got = ::read(fd_, reinterpret_cast<char*>(&sum) + done, sizeof sum - done);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return false;
      done += static_cast<size_t>(got);
    }
    return left() == 0 && sum == XXH3_64bits_digest(state_.get());
  }

 private:
  struct Free {
    void operator()(XXH3_state_t* s) const { XXH3_freeState(s); }
  };
  int fd_;
  uint64_t size_, at_ = 0;
  std::unique_ptr<XXH3_state_t, Free> state_{XXH3_createState()};
};

// Reads vectors described by `meta`; false when they overrun the entry (every count checked
// before it is multiplied: a crafted entry must not overflow its way past, nor allocate more
// than its file holds).
bool get_vectors(const nlohmann::json& meta, Precision prec, EntryReader& in, Vectors& v) {
  if (meta.is_null()) return true;
  if (!meta.at("dim").is_number_unsigned() || !meta.at("count").is_number_unsigned()) return false;
  const uint64_t dim = meta.at("dim").get<uint64_t>(), count = meta.at("count").get<uint64_t>();
  const uint64_t elt = prec == Precision::F32 ? 4 : 8;
  uint64_t n = 0, bytes = 0;
  if (__builtin_mul_overflow(dim, count, &n) || __builtin_mul_overflow(n, elt, &bytes) ||
      bytes > in.left())
    return false;
  v = Vectors::zeros(prec, static_cast<int64_t>(dim), static_cast<int64_t>(count));
  return std::visit([&](auto& x) { return in.take(x.data(), bytes); }, v.data);
}

// The decoded entry, or the reason it cannot be used.
std::optional<Decomposition> decode(const detail::Fd& f, uint64_t size, const std::string& key,
                                    std::string& why) {
  auto fail = [&](std::string w) {
    why = std::move(w);
    return std::optional<Decomposition>();
  };
  char head[16];
  if (size < sizeof head + 8) return fail("is not an indim cache file");
  EntryReader in(f, size);
  if (!in.take(head, sizeof head) || std::memcmp(head, kMagic, sizeof kMagic) != 0)
    return fail("is not an indim cache file");
  uint32_t version, mlen;
  std::memcpy(&version, head + 8, 4);
  std::memcpy(&mlen, head + 12, 4);
  if (version != kVersion) return fail("has format version " + std::to_string(version));
  std::string m(mlen <= in.left() ? mlen : 0, '\0');
  if (mlen > in.left() || !in.take(m.data(), mlen)) return fail("is truncated");
  try {
    const nlohmann::json meta = nlohmann::json::parse(m);
    if (meta.at("key") != key) return fail("holds another key");
    const Precision prec = meta.at("precision") == "fp64" ? Precision::F64 : Precision::F32;
    Decomposition d;
    if (!meta.at("sigma").is_number_unsigned()) return fail("has unreadable metadata");
    const uint64_t ns = meta.at("sigma").get<uint64_t>();
    if (ns > in.left() / 8) return fail("is truncated");
    d.sigma.resize(ns);
    if (!in.take(d.sigma.data(), ns * 8) || !get_vectors(meta.at("left"), prec, in, d.left) ||
        !get_vectors(meta.at("right"), prec, in, d.right) || in.left() != 0)
      return fail("has inconsistent sizes");
    if (!in.checksum_matches()) return fail("fails its checksum");
    return d;
  } catch (const nlohmann::json::exception&) {
    return fail("has unreadable metadata");
  }
}

// The label stored in an entry's metadata, "" when it cannot be read (never blocks: FIFOs and
// other non-files are refused by open_regular).
std::string entry_label(const std::string& path) {
  try {
    uint64_t size = 0;
    detail::Fd f = detail::open_regular(path, &size);
    char head[16];
    if (::pread(f.get(), head, 16, 0) != 16) return "";
    uint32_t mlen;
    std::memcpy(&mlen, head + 12, 4);
    if (mlen >= (1u << 20) || mlen > size) return "";
    std::string m(mlen, '\0');
    if (::pread(f.get(), m.data(), mlen, 16) != static_cast<ssize_t>(mlen)) return "";
    auto j = nlohmann::json::parse(m, nullptr, false);
    if (j.is_object() && j.contains("label") && j["label"].is_string())
      return j["label"].get<std::string>();
  } catch (const Error&) {
  }
  return "";
}

}  // namespace

DecompositionCache::DecompositionCache(std::string dir, uint64_t max_bytes)
    : dir_(std::move(dir)), max_bytes_(max_bytes) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (detail::path_kind(dir_) != detail::PathKind::Directory)
    unusable_ =
        dir_ + ": cannot create the cache directory" + (ec ? ": " + ec.message() : std::string());
  else if (::access(dir_.c_str(), W_OK | X_OK) != 0)
    unusable_ = dir_ + ": the cache directory is not writable";
}

std::string DecompositionCache::default_dir() {
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && *x != '\0')
    return (fs::path(x) / "indim").string();
  if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0')
    return (fs::path(h) / ".cache" / "indim").string();
  return (fs::temp_directory_path() / "indim-cache").string();
}

uint64_t DecompositionCache::parse_size(const std::string& text, const std::string& flag) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    throw UsageError(flag + " takes a size like 20G, 512M or 1048576, not \"" + text + "\"");
  }
  const std::string unit = text.substr(used);
  double mult = 1;
  if (unit == "K" || unit == "k")
    mult = 1024.0;
  else if (unit == "M")
    mult = 1024.0 * 1024;
  else if (unit == "G")
    mult = 1024.0 * 1024 * 1024;
  else if (unit == "T")
    mult = 1024.0 * 1024 * 1024 * 1024;
  else if (!unit.empty())
    throw UsageError(flag + ": unknown unit \"" + unit + "\" (K, M, G or T)");
  if (!(v >= 0)) throw UsageError(flag + " must not be negative");
  if (!(v * mult < 9.2e18))  // beyond uint64_t the conversion would be undefined
    throw UsageError(flag + " \"" + text + "\" is too large");
  return static_cast<uint64_t>(v * mult);
}

std::string DecompositionCache::key(const uint8_t* bytes, uint64_t n, const std::string& context) {
  XXH3_state_t* st = XXH3_createState();
  XXH3_128bits_reset(st);
  XXH3_128bits_update(st, context.data(), context.size());
  XXH3_128bits_update(st, bytes, n);
  const XXH128_hash_t h = XXH3_128bits_digest(st);
  XXH3_freeState(st);
  char hex[33];
  std::snprintf(hex, sizeof hex, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return hex;
}

std::string DecompositionCache::path_of(const std::string& key) const {
  return (fs::path(dir_) / (key + kSuffix)).string();
}

bool DecompositionCache::store(const std::string& key, const Decomposition& d,
                               const std::string& label, std::string* warning) const {
  if (!unusable_.empty()) return false;
  const Precision prec = d.left.count > 0 ? d.left.precision() : d.right.precision();
  const nlohmann::json meta = {{"key", key},
                               {"label", label},
                               {"precision", precision_name(prec)},
                               {"sigma", d.sigma.size()},
                               {"left", vectors_meta(d.left)},
                               {"right", vectors_meta(d.right)}};
  const std::string m = meta.dump();
  std::string out(kMagic, sizeof kMagic);
  put(out, kVersion);
  put(out, static_cast<uint32_t>(m.size()));
  out += m;
  out.append(reinterpret_cast<const char*>(d.sigma.data()), d.sigma.size() * sizeof(double));
  put_vectors(out, d.left);
  put_vectors(out, d.right);
  put(out, static_cast<uint64_t>(XXH3_64bits(out.data(), out.size())));
  const std::string path = path_of(key);
  std::error_code ec;
  if (detail::path_kind(path) == detail::PathKind::Directory) fs::remove_all(path, ec);
  try {
    detail::write_file_atomic(path, out);
  } catch (const Error& e) {
    if (warning != nullptr)
      *warning = std::string("warning: cannot write to the cache (") + e.what() +
                 "); going on without storing";
    return false;
  }
  evict(key);
  return true;
}

bool DecompositionCache::has(const std::string& key) const {
  if (!unusable_.empty()) return false;
  try {
    return detail::path_kind(path_of(key)) == detail::PathKind::File;
  } catch (const BadInput&) {  // unreadable: load() will say so and recompute
    return false;
  }
}

std::optional<Decomposition> DecompositionCache::load(const std::string& key,
                                                      std::string* warning) const {
  if (!unusable_.empty()) return std::nullopt;
  const std::string path = path_of(key);
  std::optional<Decomposition> d;
  std::string why;
  try {
    if (detail::path_kind(path) == detail::PathKind::Missing) return std::nullopt;
    uint64_t size = 0;
    const detail::Fd f = detail::open_regular(path, &size);
    d = decode(f, size, key, why);
  } catch (const BadInput& e) {  // a directory, FIFO, unreadable file: a miss, replaced on store
    if (warning != nullptr)
      *warning = std::string("indim: cache entry ") + e.what() + "; recomputing";
    return std::nullopt;
  }
  if (!d) {
    if (warning != nullptr) *warning = "indim: cache file " + path + " " + why + "; recomputing";
    std::error_code ec;
    fs::remove(path, ec);
    return std::nullopt;
  }
  ::utime(path.c_str(), nullptr);  // recently used
  return d;
}

std::vector<DecompositionCache::Entry> DecompositionCache::list() const {
  std::vector<Entry> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() <= 5 || name.compare(name.size() - 5, 5, kSuffix) != 0) continue;
    struct stat st {};
    if (::stat(e.path().c_str(), &st) != 0) continue;
    Entry en{name.substr(0, name.size() - 5), "", static_cast<uint64_t>(st.st_size),
             static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
    if (S_ISREG(st.st_mode)) en.label = entry_label(e.path().string());
    out.push_back(en);
  }
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) {
    return a.mtime != b.mtime ? a.mtime > b.mtime : a.key < b.key;
  });
  return out;
}

int DecompositionCache::clear() const {
  int n = 0;
  for (const auto& e : list()) {
    std::error_code ec;
    if (fs::remove(path_of(e.key), ec)) ++n;
  }
  return n;
}

void DecompositionCache::evict(const std::string& keep) const {
  std::vector<Entry> entries = list();
  uint64_t total = 0;
  for (const auto& e : entries) total += e.bytes;
  for (auto it = entries.rbegin(); it != entries.rend() && total > max_bytes_; ++it) {
    if (it->key == keep) continue;
    std::error_code ec;
    if (fs::remove(path_of(it->key), ec)) total -= it->bytes;
  }
}

}  // namespace indim
