// The service's HTTP/1.1 server: event-driven (Boost.Beast's parser on Asio, one I/O thread),
// so an idle or slow connection holds a socket and a bounded buffer but no thread. Every limit
// is explicit and applies before authentication: header bytes and lines (431), whole-header and
// whole-body deadlines, body size (413), connections in all and per client address. Requests
// whose header passes `screen` are handled on a pool of workers; answers are written back by
// the I/O thread, streamed ones (files, events) a piece at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace indim::service {

struct HttpLimits {
  size_t max_header_bytes = 16 << 10;       ///< request line and header fields (431 beyond)
  int max_header_lines = 100;               ///< header fields (431 beyond)
  uint64_t max_body = 1ull << 20;           ///< request body bytes (413 beyond)
  std::chrono::seconds header_timeout{10};  ///< the whole request line and header
  std::chrono::seconds body_timeout{30};    ///< the whole body
  std::chrono::seconds write_timeout{30};   ///< each piece of an answer (a reader that stalls)
  std::chrono::seconds idle_timeout{5};     ///< between requests of a kept-alive connection
  int max_connections = 1024;               ///< open at once, in all
  int max_client_connections = 128;         ///< open at once from one address
  int max_requests_per_connection = 1000;
  int workers = 8;  ///< threads handling requests (the I/O thread never blocks on one)
};

struct HttpRequest {
  std::string method, target, path, query;                   ///< target = path[?query], as sent
  std::string peer;                                          ///< the client's address
  std::vector<std::pair<std::string, std::string>> headers;  ///< names in lower case
  std::string body;
  std::string user;  ///< set by `screen`: who the request is from
  /// True once the client has closed its connection (a handler may then drop its work).
  std::function<bool()> client_gone;

  /// The first field called `lower_name` ("" when there is none).
  std::string header(const std::string& lower_name) const;
  /// The query parameter `name`, percent-decoded; nullopt when absent. Throws ApiError 400 for
  /// a malformed escape.
  std::optional<std::string> param(const std::string& name) const;
};

/// A body produced piece by piece on a worker: a file, an event stream.
class BodySource {
 public:
  virtual ~BodySource() = default;
  /// The next piece; "" when nothing is ready yet. Sets `done` after the last one.
  virtual std::string next(bool& done) = 0;
  /// The whole size when known in advance (sent as Content-Length), else the answer is chunked.
  virtual std::optional<uint64_t> size() const { return std::nullopt; }
  /// How long to wait before asking again after an empty piece.
  virtual std::chrono::milliseconds poll() const { return std::chrono::milliseconds(200); }
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::shared_ptr<BodySource> stream;  ///< when set, the body comes from it instead
  bool close = false;                  ///< close the connection after this answer
};

struct HttpHandlers {
  /// On the I/O thread once the header is read, before the body: an answer refuses or answers
  /// the request there (authentication, unknown routes, quick endpoints); nothing sends it on
  /// to `handle`. Must not block. May set `user`.
  std::function<std::optional<HttpResponse>(HttpRequest&)> screen;
  /// On a worker, the body read.
  std::function<HttpResponse(const HttpRequest&)> handle;
  /// An error answer the server makes itself (431, 413, 400 framing, 503 connections).
  std::function<HttpResponse(int status, const std::string& why)> error;
  /// Every answered request, once its header is written.
  std::function<void(const HttpRequest&, int status)> log;
};

class HttpServer {
 public:
  /// HTTPS when `tls_cert` and `tls_key` are given. Throws indim::UsageError for a certificate
  /// or key that cannot be used.
  HttpServer(const HttpLimits& limits, HttpHandlers handlers, const std::string& tls_cert = "",
             const std::string& tls_key = "");
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// Listens on host:port (port 0: a free one); returns the port. Throws indim::Error.
  int bind(const std::string& host, int port);
  /// Serves until stop(); returns then.
  void run();
  /// Stops accepting and serving; callable from any thread.
  void stop();
  /// Connections open now (for the metrics).
  int connections() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

/// `text` with every byte that is not printable ASCII written as \xNN: what a log line may hold.
std::string log_escape(const std::string& text);

}  // namespace indim::service
