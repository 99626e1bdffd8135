// Boost.Beast parses requests and bounds them (header_limit, body_limit); Beast's tcp_stream
// gives every phase a deadline; Asio's one I/O thread multiplexes the sockets, so a connection
// that sends nothing costs no thread. Answers are written by hand (status line, fields, body or
// chunks): they are ours, and that keeps the serializer out of the streamed ones.
#include "service/http_server.hpp"

#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <map>
#include <mutex>

#include "indim/error.hpp"
#include "io/names.hpp"
#include "service/api_error.hpp"

namespace indim::service {

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using ErrorCode = beast::error_code;

constexpr size_t kPiece = 64 << 10;            // bytes of a file answer written at a time
constexpr uint64_t kMaxDiscard = 16ull << 20;  // unread body bytes drained before a close
constexpr auto kLinger = std::chrono::seconds(2);

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] != '%') {
      out += s[i];
    } else {
      const int hi = i + 2 < s.size() ? hex_digit(s[i + 1]) : -1;
      const int lo = hi >= 0 ? hex_digit(s[i + 2]) : -1;
      if (lo < 0) throw ApiError(400, "malformed percent escape in the query");
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    }
  }
  return out;
}

bool is_http_error(const ErrorCode& ec) {
  return ec.category() == http::make_error_code(http::error::bad_target).category();
}

std::string reason(int status) {
  const auto text = http::obsolete_reason(http::int_to_status(static_cast<unsigned>(status)));
  return text.empty() ? "Status" : std::string(text);
}

// The status line and fields of an answer; the body follows.
std::string head_of(const HttpResponse& r, bool keep_alive) {
  std::string h = "HTTP/1.1 " + std::to_string(r.status) + " " + reason(r.status) + "\r\n";
  h += "Content-Type: " + r.content_type + "\r\nX-Content-Type-Options: nosniff\r\n";
  for (const auto& [name, value] : r.headers) h += name + ": " + value + "\r\n";
  if (!r.stream)
    h += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
  else if (r.stream->size())
    h += "Content-Length: " + std::to_string(*r.stream->size()) + "\r\n";
  else
    h += "Transfer-Encoding: chunked\r\n";
  if (!keep_alive) h += "Connection: close\r\n";
  return h + "\r\n";
}

std::string chunk(const std::string& piece) {
  char size[24];
  std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
  return size + piece + "\r\n";
}

}  // namespace

std::string HttpRequest::header(const std::string& lower_name) const {
  for (const auto& [name, value] : headers)
    if (name == lower_name) return value;
  return "";
}

std::optional<std::string> HttpRequest::param(const std::string& name) const {
  for (size_t at = 0; at <= query.size();) {
    const size_t end = std::min(query.find('&', at), query.size());
    const std::string pair = query.substr(at, end - at);
    const size_t eq = pair.find('=');
    if (percent_decode(pair.substr(0, eq)) == name)
      return eq == std::string::npos ? "" : percent_decode(pair.substr(eq + 1));
    at = end + 1;
  }
  return std::nullopt;
}

std::string log_escape(const std::string& text) { return detail::shown_name(text); }

// Members in the order of their lifetimes: sessions die with the io_context and reach back to
// the counts, the limits, the handlers and the TLS context, which therefore outlive it.
struct HttpServer::Impl {
  HttpLimits limits;
  HttpHandlers handlers;
  std::mutex mu;
  std::map<std::string, int> per_client;
  int open = 0;
  std::atomic<bool> stopping{false};
  std::optional<ssl::context> tls;
  std::array<char, 16384> scratch{};  ///< unread request bytes land here (I/O thread only)
  net::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  net::steady_timer backoff{ioc};
  net::thread_pool pool;

  Impl(const HttpLimits& l, HttpHandlers h)
      : limits(l), handlers(std::move(h)), pool(static_cast<size_t>(std::max(1, l.workers))) {}
  ~Impl() {
    pool.stop();
    pool.join();
  }

  // Counts a connection from `peer`; false (nothing counted) when a limit is reached.
  bool admit(const std::string& peer, std::string& why) {
    std::lock_guard<std::mutex> lock(mu);
    if (open >= limits.max_connections) {
      why = "the service holds " + std::to_string(open) + " connections, its limit";
      return false;
    }
    if (per_client[peer] >= limits.max_client_connections) {
      why = "your address holds " + std::to_string(per_client[peer]) +
            " connections, the limit per client";
      return false;
    }
    ++open, ++per_client[peer];
    return true;
  }
  void release(const std::string& peer) {
    std::lock_guard<std::mutex> lock(mu);
    --open;
    if (--per_client[peer] <= 0) per_client.erase(peer);
  }

  void accept();
  void start_session(tcp::socket socket);
  void refuse_connection(tcp::socket& socket, const std::string& why);
};

namespace {

// One connection, plain or TLS (Derived gives stream(), handshake() and shutdown()). Everything
// but `handle` and BodySource::next runs on the I/O thread.
template <class Derived>
class Session {
 public:
  Session(HttpServer::Impl& server, std::string peer)
      : srv_(server), limits_(server.limits), peer_(std::move(peer)), timer_(server.ioc) {}
  ~Session() { srv_.release(peer_); }

 protected:
  Derived& self() { return static_cast<Derived&>(*this); }
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(self().stream()); }
  std::shared_ptr<Derived> shared() { return self().shared_from_this(); }

  // The first request's deadline runs from the connection's start (a TLS handshake included).
  void begin() {
    lowest().expires_after(limits_.header_timeout);
    self().handshake([s = shared()](ErrorCode ec) {
      if (ec) return s->close_now();
      s->read_header();
    });
  }

  // A kept-alive connection: idle_timeout for the next request's first bytes, then the
  // header's own deadline.
  void wait_request() {
    if (buf_.size() > 0) {
      lowest().expires_after(limits_.header_timeout);
      return read_header();
    }
    lowest().expires_after(limits_.idle_timeout);
    self().stream().async_read_some(buf_.prepare(4096), [s = shared()](ErrorCode ec, size_t n) {
      s->buf_.commit(n);
      if (ec) return s->close_now();
      s->lowest().expires_after(s->limits_.header_timeout);
      s->read_header();
    });
  }

  void read_header() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(limits_.max_header_bytes));
    parser_->body_limit(limits_.max_body);
    http::async_read_header(self().stream(), buf_, *parser_,
                            [s = shared()](ErrorCode ec, size_t) { s->on_header(ec); });
  }

  void on_header(const ErrorCode& ec) {
    req_ = std::make_shared<HttpRequest>();
    req_->peer = peer_;
    if (ec == http::error::header_limit)
      return refuse(431, "the request line and header fields are over " +
                             std::to_string(limits_.max_header_bytes) + " bytes");
    if (ec == http::error::body_limit) return refuse_body_limit();
    if (ec && is_http_error(ec)) return refuse(400, "malformed request: " + ec.message());
    if (ec) return close_now();  // the deadline passed, or the client went away
    const auto& h = parser_->get();
    req_->method = std::string(h.method_string());
    req_->target = std::string(h.target());
    const size_t q = req_->target.find('?');
    req_->path = req_->target.substr(0, q);
    req_->query = q == std::string::npos ? "" : req_->target.substr(q + 1);
    int lines = 0;
    for (const auto& f : h) {
      req_->headers.emplace_back(lower(std::string(f.name_string())), std::string(f.value()));
      ++lines;
    }
    if (lines > limits_.max_header_lines)
      return refuse(431, "the request has " + std::to_string(lines) + " header fields, over " +
                             std::to_string(limits_.max_header_lines));
    if (const std::string why = framing_problem(); !why.empty()) return refuse(400, why);
    if (req_->path.empty() || req_->path.front() != '/')
      return refuse(400, "the request target must be a path");
    std::optional<HttpResponse> early = srv_.handlers.screen(*req_);
    if (early) return reply(std::move(*early));
    continue_then_read_body();
  }

  // RFC 9112 6.3: a message whose length is ambiguous is refused, never guessed at.
  std::string framing_problem() const {
    const auto& h = parser_->get();
    if (h.count(http::field::content_length) > 1)
      return "the request has two Content-Length fields";
    if (h.count(http::field::transfer_encoding) == 0) return "";
    const auto te = h[http::field::transfer_encoding];
    if (h.count(http::field::transfer_encoding) > 1 || !beast::iequals(te, "chunked"))
      return "Transfer-Encoding must be exactly \"chunked\"";
    if (h.count(http::field::content_length) > 0)
      return "the request has both Transfer-Encoding and Content-Length";
    return "";
  }

  void continue_then_read_body() {
    if (parser_->is_done()) return dispatch();
    if (!beast::iequals(parser_->get()[http::field::expect], "100-continue")) return read_body();
    out_ = "HTTP/1.1 100 Continue\r\n\r\n";
    lowest().expires_after(limits_.write_timeout);
    net::async_write(self().stream(), net::buffer(out_), [s = shared()](ErrorCode ec, size_t) {
      if (ec) return s->close_now();
      s->read_body();
    });
  }

  void read_body() {
    lowest().expires_after(limits_.body_timeout);
    http::async_read(self().stream(), buf_, *parser_, [s = shared()](ErrorCode ec, size_t) {
      if (ec == http::error::body_limit) return s->refuse_body_limit();
      if (ec && is_http_error(ec)) return s->refuse(400, "malformed request body: " + ec.message());
      if (ec) return s->close_now();
      s->dispatch();
    });
  }

  void refuse_body_limit() {
    refuse(413, "the request body is over " + std::to_string(limits_.max_body) + " bytes");
  }

  void refuse(int status, const std::string& why) {
    HttpResponse r = srv_.handlers.error(status, why);
    r.close = true;
    reply(std::move(r));
  }

  // The body read: the request goes to a worker, its answer comes back here.
  void dispatch() {
    req_->body = std::move(parser_->get().body());
    // Nothing reads the socket while a worker has the request: a peek sees the client's close.
    req_->client_gone = [fd = lowest().socket().native_handle()] {
      char c;
      const ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
      return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    };
    lowest().expires_never();
    net::post(srv_.pool, [s = shared()] {
      HttpResponse r;
      try {
        r = s->srv_.handlers.handle(*s->req_);
      } catch (const ApiError& e) {
        r = s->srv_.handlers.error(e.status(), e.what());
      } catch (const std::exception&) {
        r = s->srv_.handlers.error(500, "internal error");
      }
      net::post(s->srv_.ioc, [s, r = std::move(r)]() mutable { s->reply(std::move(r)); });
    });
  }

  void reply(HttpResponse r) {
    const bool body_unread = !parser_ || !parser_->is_done();
    keep_ = !r.close && !body_unread && parser_->get().keep_alive() &&
            ++served_ < limits_.max_requests_per_connection && !srv_.stopping;
    linger_ = body_unread;
    if (srv_.handlers.log) srv_.handlers.log(*req_, r.status);
    out_ = head_of(r, keep_);
    if (!r.stream) {
      out_ += r.body;
      return write([s = shared()] { s->after_reply(); });
    }
    source_ = r.stream;
    chunked_ = !source_->size();
    left_ = source_->size().value_or(0);
    write([s = shared()] { s->pump(); });
  }

  template <class Then>
  void write(Then then) {
    lowest().expires_after(limits_.write_timeout);
    net::async_write(self().stream(), net::buffer(out_),
                     [s = shared(), then](ErrorCode ec, size_t) {
                       if (ec) return s->close_now();
                       then();
                     });
  }

  // The next piece of a streamed answer, made on a worker; an empty one waits poll().
  void pump() {
    lowest().expires_never();
    net::post(srv_.pool, [s = shared()] {
      bool done = false;
      std::string piece;
      try {
        piece = s->source_->next(done);
      } catch (const std::exception&) {
        piece.clear(), done = true, s->keep_ = false, s->chunked_ = false;
      }
      net::post(s->srv_.ioc, [s, piece = std::move(piece), done]() mutable {
        s->on_piece(std::move(piece), done);
      });
    });
  }

  void on_piece(std::string piece, bool done) {
    if (srv_.stopping) return close_now();
    if (!piece.empty()) {
      left_ -= std::min<uint64_t>(left_, piece.size());
      out_ = chunked_ ? chunk(piece) : std::move(piece);
      return write([s = shared(), done] { done ? s->end_stream() : s->pump(); });
    }
    if (done) return end_stream();
    timer_.expires_after(source_->poll());
    timer_.async_wait([s = shared()](ErrorCode ec) {
      if (!ec) s->pump();
    });
  }

  void end_stream() {
    source_.reset();
    if (!chunked_) {
      if (left_ > 0) keep_ = false;  // the file shrank: the client sees a short answer
      return after_reply();
    }
    out_ = "0\r\n\r\n";
    write([s = shared()] { s->after_reply(); });
  }

  void after_reply() {
    if (keep_) return wait_request();
    if (linger_) return discard_then_close(0);
    self().shutdown([s = shared()] { s->close_now(); });
  }

  // Closing with unread request bytes makes the kernel send a reset, which can destroy the
  // answer before the client reads it: stop sending, read what the client still sends (a
  // bounded amount, for a bounded time), then close.
  void discard_then_close(uint64_t discarded) {
    if (discarded == 0) {
      ErrorCode ignored;
      lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
      lowest().expires_after(kLinger);
    }
    if (discarded > kMaxDiscard) return close_now();
    lowest().async_read_some(net::buffer(srv_.scratch),
                             [s = shared(), discarded](ErrorCode ec, size_t n) {
                               if (ec) return s->close_now();
                               s->discard_then_close(discarded + n);
                             });
  }

  void close_now() {
    ErrorCode ignored;
    timer_.cancel();
    lowest().socket().close(ignored);
  }

  HttpServer::Impl& srv_;
  const HttpLimits& limits_;
  std::string peer_;
  net::steady_timer timer_;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<HttpRequest> req_;
  std::shared_ptr<BodySource> source_;
  std::string out_;
  uint64_t left_ = 0;
  int served_ = 0;
  bool keep_ = false, chunked_ = false, linger_ = false;
};

class PlainSession : public Session<PlainSession>,
                     public std::enable_shared_from_this<PlainSession> {
 public:
  PlainSession(HttpServer::Impl& server, tcp::socket socket, std::string peer)
      : Session(server, std::move(peer)), stream_(std::move(socket)) {}
  void start() { begin(); }
  beast::tcp_stream& stream() { return stream_; }
  template <class Then>
  void handshake(Then then) {
    then(ErrorCode{});
  }
  template <class Then>
  void shutdown(Then then) {
    ErrorCode ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    then();
  }

 private:
  friend class Session<PlainSession>;
  beast::tcp_stream stream_;
};

class TlsSession : public Session<TlsSession>, public std::enable_shared_from_this<TlsSession> {
 public:
  TlsSession(HttpServer::Impl& server, tcp::socket socket, std::string peer)
      : Session(server, std::move(peer)), stream_(std::move(socket), *server.tls) {}
  void start() { begin(); }
  beast::ssl_stream<beast::tcp_stream>& stream() { return stream_; }
  template <class Then>
  void handshake(Then then) {
    stream_.async_handshake(ssl::stream_base::server, std::move(then));
  }
  template <class Then>
  void shutdown(Then then) {
    beast::get_lowest_layer(stream_).expires_after(kLinger);
    stream_.async_shutdown([then](ErrorCode) { then(); });
  }

 private:
  friend class Session<TlsSession>;
  beast::ssl_stream<beast::tcp_stream> stream_;
};

}  // namespace

void HttpServer::Impl::refuse_connection(tcp::socket& socket, const std::string& why) {
  if (!tls) {  // a plain client can be told why; a TLS one would need a handshake first
    HttpResponse r = handlers.error(503, why);
    r.headers.emplace_back("Retry-After", "1");
    const std::string text = head_of(r, false) + r.body;
    (void)::send(socket.native_handle(), text.data(), text.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  }
  ErrorCode ignored;
  socket.close(ignored);
}

void HttpServer::Impl::start_session(tcp::socket socket) {
  ErrorCode ec;
  socket.set_option(tcp::no_delay(true), ec);  // no Nagle wait on kept-alive answers
  const auto remote = socket.remote_endpoint(ec);
  if (ec) return;
  const std::string peer = remote.address().to_string();
  std::string why;
  if (!admit(peer, why)) return refuse_connection(socket, why);
  if (tls)
    std::make_shared<TlsSession>(*this, std::move(socket), peer)->start();
  else
    std::make_shared<PlainSession>(*this, std::move(socket), peer)->start();
}

void HttpServer::Impl::accept() {
  acceptor.async_accept([this](ErrorCode ec, tcp::socket socket) {
    if (!acceptor.is_open()) return;
    if (!ec) {
      start_session(std::move(socket));
      return accept();
    }
    // Out of descriptors (or another passing failure): try again shortly, not in a busy loop.
    backoff.expires_after(std::chrono::milliseconds(100));
    backoff.async_wait([this](ErrorCode) { accept(); });
  });
}

HttpServer::HttpServer(const HttpLimits& limits, HttpHandlers handlers, const std::string& tls_cert,
                       const std::string& tls_key)
    : impl_(std::make_unique<Impl>(limits, std::move(handlers))) {
  if (tls_cert.empty()) return;
  try {
    impl_->tls.emplace(ssl::context::tls_server);
    impl_->tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                            ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                            ssl::context::no_tlsv1_1);
    impl_->tls->use_certificate_chain_file(tls_cert);
    impl_->tls->use_private_key_file(tls_key, ssl::context::pem);
  } catch (const boost::system::system_error& e) {
    throw UsageError("--tls-cert " + tls_cert + " / --tls-key " + tls_key +
                     ": not a usable certificate and key (PEM): " + e.code().message());
  }
  if (SSL_CTX_check_private_key(impl_->tls->native_handle()) != 1)
    throw UsageError("--tls-key " + tls_key + " is not the key of --tls-cert " + tls_cert);
}

HttpServer::~HttpServer() = default;

int HttpServer::bind(const std::string& host, int port) {
  ErrorCode ec;
  tcp::resolver resolver(impl_->ioc);
  const auto found = resolver.resolve(host, std::to_string(port),
                                      tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || found.empty())
    throw Error("--listen " + host + ":" + std::to_string(port) + ": not an address of this host");
  const tcp::endpoint at = found.begin()->endpoint();
  tcp::acceptor& a = impl_->acceptor;
  a.open(at.protocol(), ec);
  if (!ec) a.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(at, ec);
  if (!ec) a.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    throw Error("--listen " + host + ":" + std::to_string(port) + ": cannot bind: " + ec.message());
  return a.local_endpoint().port();
}

void HttpServer::run() {
  impl_->accept();
  impl_->ioc.run();
}

void HttpServer::stop() {
  impl_->stopping = true;
  net::post(impl_->ioc, [impl = impl_.get()] {
    ErrorCode ignored;
    impl->acceptor.close(ignored);
    impl->ioc.stop();
  });
}

int HttpServer::connections() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->open;
}

}  // namespace indim::service
