#include "service/serve.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <memory>
#include <thread>

#include "indim/error.hpp"
#include "io/atomic_file.hpp"
#include "io/dir_lock.hpp"
#include "service/http_api.hpp"
#include "service/http_server.hpp"

namespace fs = std::filesystem;

namespace indim::service {

namespace {

void check_options(const ServeOptions& o) {
  check_tenants(o.tenants);
  if (o.state_dir.empty()) throw UsageError("serve needs --state DIR");
  if (o.tls_cert.empty() != o.tls_key.empty())
    throw UsageError("--tls-cert and --tls-key go together");
}

HttpLimits http_limits(const ServeOptions& o) {
  HttpLimits l;
  l.max_body = o.max_body;
  l.header_timeout = l.body_timeout = l.write_timeout = std::chrono::seconds(o.timeout_s);
  l.idle_timeout = std::chrono::seconds(std::min(5, o.timeout_s));
  l.max_connections = o.max_connections;
  l.max_client_connections = o.max_client_connections;
  l.workers = std::max(2, o.http_threads);
  return l;
}

// Where clients reach the service, for scripts and tests: <state>/serve.json.
std::string write_endpoint(const ServeOptions& o, const std::string& host, int port) {
  const bool v6 = host.find(':') != std::string::npos;
  const std::string url = std::string(o.tls_cert.empty() ? "http" : "https") + "://" +
                          (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
  const nlohmann::json j = {{"url", url}, {"pid", ::getpid()}, {"version", INDIM_VERSION}};
  detail::write_file_atomic((fs::path(o.state_dir) / "serve.json").string(), j.dump() + "\n");
  return url;
}

// SIGTERM and SIGINT write their number to a pipe that one thread reads: a handler, not
// sigwait, because threads started before main (OpenBLAS's) would otherwise take the signal
// with its default action.
int g_stop_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int sig) {
  const unsigned char b = static_cast<unsigned char>(sig);
  const ssize_t n = ::write(g_stop_pipe[1], &b, 1);
  (void)n;
}

void catch_stop_signals() {
  if (::pipe(g_stop_pipe) != 0) throw Error("serve: cannot create a pipe for signals");
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

int wait_stop_signal() {
  unsigned char b = 0;
  while (::read(g_stop_pipe[0], &b, 1) < 0 && errno == EINTR) {
  }
  return b;
}

void log_line(const ServeOptions& o, const std::string& line) {
  if (o.log) o.log(line);
}

}  // namespace

std::pair<std::string, int> parse_listen(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon + 1 == listen.size())
    throw UsageError("--listen " + listen + ": expected HOST:PORT");
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  const std::string port = listen.substr(colon + 1);
  if (host.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) > 65535)
    throw UsageError("--listen " + listen + ": expected HOST:PORT with a port of 0 to 65535");
  return {host, std::stoi(port)};
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// What the service logs may quote a request (a path, a target): escaped, so that no client
// can forge a line or send the terminal an escape sequence.
ServeOptions with_escaped_log(const ServeOptions& given) {
  ServeOptions o = given;
  if (given.log) o.log = [log = given.log](const std::string& line) { log(log_escape(line)); };
  return o;
}

int serve(const ServeOptions& given) {
  const ServeOptions o = with_escaped_log(given);
  check_options(o);
  const RootSet roots(o.roots);
  const auto [host, port] = parse_listen(o.listen);
  std::error_code ec;
  // Reports, journals and jobs.db are for their tenants only: nothing the service creates is
  // readable by other users of the node, and a state folder made before is closed too.
  ::umask(077);
  fs::create_directories(fs::path(o.state_dir) / "jobs", ec);
  if (ec) throw Error(o.state_dir + ": cannot create the state folder: " + ec.message());
  fs::permissions(o.state_dir, fs::perms::owner_all, ec);
  if (ec) throw Error(o.state_dir + ": cannot make the state folder private: " + ec.message());
  // Over a file size limit, a write fails (EFBIG) as on a full disk, instead of killing us.
  ::signal(SIGXFSZ, SIG_IGN);
  const detail::DirLock lock(o.state_dir, "indim serve");
  if (!is_loopback(host) && o.tls_cert.empty())
    log_line(o, "warning: listening on " + host +
                    " without TLS: the token and reports cross the "
                    "network in clear text (--tls-cert, --tls-key)");
  JobStore store((fs::path(o.state_dir) / "jobs.db").string());
  Metrics metrics;
  Scheduler scheduler(o, store, roots, metrics);
  Api api{o, scheduler, roots, metrics, store};
  HttpServer server(http_limits(o), make_handlers(api), o.tls_cert, o.tls_key);
  api.server = &server;
  const int bound = server.bind(host, port);

  catch_stop_signals();
  std::thread stopper([&] {
    const int sig = wait_stop_signal();
    if (sig != 0)
      log_line(o, std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
                      ": draining (no new jobs; the running one stops after its units in flight)");
    scheduler.drain();
    server.stop();
  });
  scheduler.start();
  const std::string url = write_endpoint(o, host, bound);
  log_line(o, "listening on " + url + " (state " + o.state_dir + ")");
  server.run();
  stopper.join();
  fs::remove(fs::path(o.state_dir) / "serve.json", ec);
  log_line(o, "stopped");
  return 0;
}

}  // namespace indim::service
