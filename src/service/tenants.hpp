// Who may use the service: tenants, each a name and a bearer token, read from files that only
// their owner may read (as ssh insists for private keys). A tenant sees and cancels only its own
// jobs; an admin sees every job.
#pragma once

#include <string>
#include <vector>

namespace indim::service {

struct Tenant {
  std::string name, token;
  bool admin = false;
};

/// The tenant name of a single --token-file or $INDIM_TOKEN (an admin: it is the only one).
constexpr const char* kDefaultTenant = "default";

/// The first line of a secret file of at most 64 KiB. Throws indim::UsageError naming the file
/// when group or others may read or write it, or it cannot be read.
std::string read_secret_file(const std::string& path);

/// A tokens file: one "NAME TOKEN" per line; blank lines and lines starting with '#' are
/// skipped. Names are 1 to 64 of [A-Za-z0-9._-], tokens at least 16 characters of printable
/// ASCII; both unique. Throws indim::UsageError naming the file and line.
std::vector<Tenant> read_tenants(const std::string& path);

/// Marks the tenants named in `admins` as admins. Throws indim::UsageError for a name that is
/// not a tenant.
void mark_admins(std::vector<Tenant>& tenants, const std::vector<std::string>& admins);

/// Checks a tenant list for serve: at least one, tokens of 16 characters or more, names and
/// tokens unique. Throws indim::UsageError.
void check_tenants(const std::vector<Tenant>& tenants);

/// True when `given` equals `expected`, in time that depends only on their lengths.
bool token_matches(const std::string& given, const std::string& expected);

/// The tenant whose token is `token`, or nullptr. Every token is compared, each in time that
/// depends only on the lengths, so the time taken says nothing about which one nearly matched.
const Tenant* find_tenant(const std::vector<Tenant>& tenants, const std::string& token);

}  // namespace indim::service
