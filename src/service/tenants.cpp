#include "service/tenants.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <sstream>

#include "indim/error.hpp"
#include "io/regular_file.hpp"

namespace indim::service {

namespace {

constexpr uint64_t kMaxSecretBytes = 64 << 10;

std::string mode_text(mode_t m) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
  return buf;
}

std::string read_all(const std::string& path, const detail::Fd& f, uint64_t size) {
  std::string text(size, '\0');
  uint64_t got = 0;
  while (got < size) {
    const ssize_t n = ::read(f.get(), text.data() + got, size - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw UsageError(path + ": cannot read: " + std::strerror(errno));
    if (n == 0) break;
    got += static_cast<uint64_t>(n);
  }
  text.resize(got);
  return text;
}

bool valid_name(const std::string& n) {
  return !n.empty() && n.size() <= 64 &&
         n.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") ==
             std::string::npos;
}

bool printable(const std::string& t) {
  for (const char c : t)
    if (c <= ' ' || c >= 0x7f) return false;
  return true;
}

std::string read_secret_text(const std::string& path) {
  uint64_t size = 0;
  detail::Fd f;
  try {
    f = detail::open_regular(path, &size);
  } catch (const std::exception& e) {
    throw UsageError(e.what());
  }
  struct stat st {};
  if (::fstat(f.get(), &st) != 0) throw UsageError(path + ": cannot stat: " + std::strerror(errno));
  if ((st.st_mode & 077) != 0)
    throw UsageError(path + ": permissions " + mode_text(st.st_mode) +
                     " let others read or change this secret; make it private: chmod 600 " + path);
  if (size > kMaxSecretBytes)
    throw UsageError(path + ": " + std::to_string(size) + " bytes, over the limit of " +
                     std::to_string(kMaxSecretBytes));
  return read_all(path, f, size);
}

}  // namespace

bool token_matches(const std::string& given, const std::string& expected) {
  const size_t n = std::max(given.size(), expected.size());
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char a = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    const unsigned char b = i < expected.size() ? static_cast<unsigned char>(expected[i]) : 0;
    diff |= static_cast<unsigned char>(a ^ b);
  }
  return diff == 0 && !expected.empty();
}

std::string read_secret_file(const std::string& path) {
  const std::string text = read_secret_text(path);
  return text.substr(0, text.find_first_of("\r\n"));
}

std::vector<Tenant> read_tenants(const std::string& path) {
  std::istringstream in(read_secret_text(path));
  std::vector<Tenant> out;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    std::istringstream fields(line);
    Tenant t;
    std::string extra;
    fields >> t.name >> t.token >> extra;
    const std::string where = path + ":" + std::to_string(number) + ": ";
    if (t.token.empty() || !extra.empty())
      throw UsageError(where + "expected NAME TOKEN (two fields)");
    if (!valid_name(t.name))
      throw UsageError(where + "a tenant name is 1 to 64 of A-Z a-z 0-9 . _ -");
    if (!printable(t.token)) throw UsageError(where + "a token is printable ASCII");
    out.push_back(std::move(t));
  }
  if (out.empty()) throw UsageError(path + ": holds no tenant (one NAME TOKEN per line)");
  return out;
}

void mark_admins(std::vector<Tenant>& tenants, const std::vector<std::string>& admins) {
  for (const auto& name : admins) {
    bool found = false;
    for (Tenant& t : tenants)
      if (t.name == name) t.admin = found = true;
    if (!found) throw UsageError("--admins " + name + ": no tenant of that name");
  }
}

void check_tenants(const std::vector<Tenant>& tenants) {
  if (tenants.empty())
    throw UsageError(
        "serve needs a bearer token (--token-file FILE, $INDIM_TOKEN, or --tokens FILE)");
  std::set<std::string> names, tokens;
  for (const Tenant& t : tenants) {
    if (t.token.size() < 16)
      throw UsageError("the token of " + t.name + " is shorter than 16 characters");
    if (!names.insert(t.name).second) throw UsageError("tenant " + t.name + " is named twice");
    if (!tokens.insert(t.token).second)
      throw UsageError("tenant " + t.name + " has the token of another tenant");
  }
}

const Tenant* find_tenant(const std::vector<Tenant>& tenants, const std::string& token) {
  const Tenant* found = nullptr;
  for (const Tenant& t : tenants)
    if (token_matches(token, t.token) && found == nullptr) found = &t;
  return found;
}

}  // namespace indim::service
