// `indim serve` against clients that do not play fair: idle and slowloris connections, header
// floods, ambiguous framing, slow readers, bare TLS connects, and a log that quotes what
// clients send. Each test starts the real service and drives it over real sockets.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "raw_socket.hpp"
#include "service_jobs.hpp"

using namespace indim;
using test::body_of;
using test::RawSocket;
using test::ServiceProcess;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

const Json kJob = {{"base", "small/base"}, {"tuned", {"small/full"}}};

std::string root() { return test::demo_models().dir.str(); }

std::string submit_and_finish(httplib::Client& c, const Json& body = kJob) {
  const std::string id = test::submit_job(c, body);
  if (!id.empty()) test::wait_state(c, id, "done");
  return id;
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// /healthz without a token and the job with it, each on a fresh connection: the seconds the
// slower took (a large number when either failed).
double probe(const ServiceProcess& s, const std::string& id) {
  const auto t0 = Clock::now();
  auto anonymous = s.client("");
  anonymous->set_read_timeout(5, 0);
  const auto h = anonymous->Get("/healthz");
  auto c = s.client();
  c->set_read_timeout(5, 0);
  const auto j = c->Get("/v1/jobs/" + id);
  if (!h || h->status != 200 || !j || j->status != 200) return 1e9;
  return seconds_since(t0);
}

std::string status_line(const std::string& answer) { return answer.substr(0, answer.find('\r')); }

class ServiceHttp : public ::testing::Test {
 protected:
  void SetUp() override { test::demo_models(); }
  std::string state() const { return dir_ / "state"; }
  test::TempDir dir_;
};

}  // namespace

TEST_F(ServiceHttp, IdleAndSlowlorisConnectionsLeaveHealthzAndJobsAnswering) {
  ServiceProcess s(root(), state(), {"--http-threads", "2", "--max-client-connections", "1000"});
  ASSERT_TRUE(s.ready()) << s.log();
  const std::string id = submit_and_finish(*s.client());
  ASSERT_FALSE(id.empty()) << s.log();
  const uint64_t idle_rss = test::resident_bytes(s.pid());
  const int port = test::port_of(s.url());
  std::vector<RawSocket> idle, slow;
  for (int i = 0; i < 200; ++i) idle.emplace_back(port);
  for (int i = 0; i < 50; ++i) {
    slow.emplace_back(port);
    slow.back().send_all("GET /v1/jobs HTTP/1.1\r\nHost: x\r\n");
  }
  std::atomic<bool> stop{false};
  std::thread trickle([&] {  // one header line per connection every 100 ms: never a whole header
    for (int n = 0; !stop; ++n) {
      for (auto& c : slow) c.send_all("X-Slow-" + std::to_string(n) + ": a\r\n");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  double worst = 0;
  for (int round = 0; round < 10; ++round) {
    worst = std::max(worst, probe(s, id));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  const std::string metrics = s.client()->Get("/metrics")->body;
  const uint64_t loaded_rss = test::resident_bytes(s.pid());
  stop = true;
  trickle.join();
  EXPECT_LT(worst, 1.0) << "seconds for /healthz and GET /v1/jobs/{id} with 250 idle or slow "
                           "connections held open";
  EXPECT_LT(loaded_rss, idle_rss + (64ull << 20)) << idle_rss << " -> " << loaded_rss;
  const size_t at = metrics.find("\nindim_http_connections ");
  ASSERT_NE(at, std::string::npos) << metrics;
  EXPECT_GE(std::stoi(metrics.substr(at + 24)), 250) << "every connection was held, none dropped";
}

TEST_F(ServiceHttp, HeaderFloodsGet431AfterABoundedNumberOfBytes) {
  ServiceProcess s(root(), state());
  ASSERT_TRUE(s.ready()) << s.log();
  const int port = test::port_of(s.url());
  const uint64_t before = test::resident_bytes(s.pid());
  RawSocket flood(port);
  ASSERT_TRUE(flood.send_all("GET /v1/jobs HTTP/1.1\r\nHost: x\r\n"));
  std::string answer;
  std::thread reader([&] { answer = flood.receive(std::chrono::seconds(30), "\r\n\r\n"); });
  const std::string lines = [] {
    std::string l;
    while (l.size() < (64 << 10)) l += "X-Flood: " + std::string(100, 'a') + "\r\n";
    return l;
  }();
  uint64_t sent = 0;
  while (sent < (512ull << 20) && flood.send_all(lines)) sent += lines.size();
  reader.join();
  EXPECT_EQ(status_line(answer), "HTTP/1.1 431 Request Header Fields Too Large") << answer;
  EXPECT_LT(sent, 64ull << 20) << "the service stopped reading the flood";
  EXPECT_LT(test::resident_bytes(s.pid()), before + (32ull << 20));

  RawSocket many(port);  // short lines, but too many of them
  std::string request = "GET /v1/jobs HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 150; ++i) request += "X-" + std::to_string(i) + ": 1\r\n";
  ASSERT_TRUE(many.send_all(request + "\r\n"));
  const std::string a = many.receive(std::chrono::seconds(10), "\r\n\r\n");
  EXPECT_EQ(status_line(a), "HTTP/1.1 431 Request Header Fields Too Large") << a;
  EXPECT_EQ(s.client("")->Get("/healthz")->status, 200);
}

TEST_F(ServiceHttp, AmbiguousFramingIsRefusedNotRouted) {
  ServiceProcess s(root(), state());
  ASSERT_TRUE(s.ready()) << s.log();
  const std::string auth = std::string("Authorization: Bearer ") + test::kToken + "\r\n";
  const std::string body = kJob.dump();
  const std::string head = "POST /v1/jobs HTTP/1.1\r\nHost: x\r\n" + auth;
  const std::string len = std::to_string(body.size());
  for (const std::string& framing :
       std::vector<std::string>{"Content-Length: " + len + "\r\nContent-Length: 5\r\n",
                                "Transfer-Encoding: gzip\r\nContent-Length: " + len + "\r\n",
                                "Content-Length: " + len + "\r\nTransfer-Encoding: chunked\r\n",
                                "Transfer-Encoding: chunked\r\nContent-Length: " + len + "\r\n",
                                std::string("Transfer-Encoding: gzip, chunked\r\n")}) {
    RawSocket c(test::port_of(s.url()));
    ASSERT_TRUE(c.send_all(head + framing + "\r\n" + body));
    const std::string a = c.receive(std::chrono::seconds(10), "\r\n\r\n");
    EXPECT_EQ(status_line(a), "HTTP/1.1 400 Bad Request") << framing << a;
  }
  EXPECT_EQ(body_of(s.client()->Get("/v1/jobs"))["jobs"].size(), 0u) << "nothing was queued";
}

TEST_F(ServiceHttp, TakesAJsonBodyWhateverItsContentTypeAndAnswersExpectContinue) {
  ServiceProcess s(root(), state());
  ASSERT_TRUE(s.ready()) << s.log();
  Json big = kJob;
  for (int i = 0; i < 200; ++i)
    big["options"]["exclude"].push_back("model\\.layers\\.9" + std::to_string(i) +
                                        "\\.mlp\\.(gate|up)_proj");
  const std::string body = big.dump();
  ASSERT_GT(body.size(), 9000u);
  const auto form = s.client()->Post("/v1/jobs", body, "application/x-www-form-urlencoded");
  ASSERT_TRUE(form);
  EXPECT_EQ(form->status, 202) << form->body;

  // What the README's curl -d example sends: a form type, and Expect: 100-continue.
  test::write_text(dir_ / "job.json", body);
  const auto curl = test::run_command(
      "curl -s -o /dev/null -w '%{http_code}' -H "
      "'Authorization: Bearer " +
      std::string(test::kToken) + "' -d @" + (dir_ / "job.json") + " " + s.url() + "/v1/jobs");
  EXPECT_EQ(curl.out, "202");

  RawSocket raw(test::port_of(s.url()));
  ASSERT_TRUE(raw.send_all(
      "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(test::kToken) +
      "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nExpect: 100-continue\r\n\r\n"));
  EXPECT_EQ(status_line(raw.receive(std::chrono::seconds(5), "\r\n\r\n")), "HTTP/1.1 100 Continue");
  ASSERT_TRUE(raw.send_all(body));
  EXPECT_EQ(status_line(raw.receive(std::chrono::seconds(10), "\r\n\r\n")),
            "HTTP/1.1 202 Accepted");
}

TEST_F(ServiceHttp, KeptAliveConnectionsAnswerWithoutANagleDelay) {
  ServiceProcess s(root(), state());
  ASSERT_TRUE(s.ready()) << s.log();
  auto c = s.client();
  const std::string id = submit_and_finish(*c);
  c->set_keep_alive(true);
  ASSERT_EQ(c->Get("/v1/jobs/" + id)->status, 200);
  const auto t0 = Clock::now();
  for (int i = 0; i < 50; ++i) ASSERT_EQ(c->Get("/v1/jobs/" + id)->status, 200);
  // Nagle's wait for the delayed ACK costs ~40 ms an answer (2 s here); without it, a few ms.
  EXPECT_LT(seconds_since(t0), 1.0);
}

TEST_F(ServiceHttp, TheLogEscapesWhatClientsSend) {
  const std::string evil = "evil\nFORGED line \x1b[2J";
  std::filesystem::create_directories(dir_ / "root");
  std::filesystem::copy(root() + "/small", dir_ / ("root/" + evil),
                        std::filesystem::copy_options::recursive);
  ServiceProcess s(dir_ / "root", state());
  ASSERT_TRUE(s.ready()) << s.log();
  const Json job = {{"base", evil + "/base"}, {"tuned", {evil + "/full"}}};
  EXPECT_EQ(s.client()->Post("/v1/jobs", job.dump(), "application/json")->status, 202);
  RawSocket raw(test::port_of(s.url()));
  raw.send_all("GET /v1/jobs/%0aFORGED%1b[31m HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
               std::string(test::kToken) + "\r\n\r\n");
  EXPECT_NE(raw.receive(std::chrono::seconds(5), "\r\n\r\n").find("404"), std::string::npos);
  s.stop(SIGTERM, std::chrono::seconds(30));
  const std::string log = s.log();
  EXPECT_NE(log.find("evil\\x0aFORGED"), std::string::npos) << log;
  EXPECT_EQ(log.find("\nFORGED"), std::string::npos) << log;
  EXPECT_EQ(log.find('\x1b'), std::string::npos) << log;
}

TEST_F(ServiceHttp, SlowReadersEventStreamsAndStalledRequestsTakeNoThread) {
  ServiceProcess s(root(), state(), {"--http-threads", "2"});
  ASSERT_TRUE(s.ready()) << s.log();
  Json html = kJob;
  html["options"] = {{"html", true}};
  const std::string id = submit_and_finish(*s.client(), html);
  const int port = test::port_of(s.url());
  const std::string auth = "Authorization: Bearer " + std::string(test::kToken) + "\r\n";
  std::vector<RawSocket> held;
  for (int i = 0; i < 8; ++i) {  // readers that take nothing of a large answer
    held.emplace_back(port);
    const int small = 1024;
    ::setsockopt(held.back().fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    held.back().send_all("GET /v1/jobs/" + id + "/report.html HTTP/1.1\r\nHost: x\r\n" + auth +
                         "\r\n");
  }
  for (int i = 0; i < 4; ++i) {  // event streams
    held.emplace_back(port);
    held.back().send_all("GET /v1/jobs/" + id + "/events HTTP/1.1\r\nHost: x\r\n" + auth + "\r\n");
  }
  for (int i = 0; i < 4; ++i) {  // requests that stop half way
    held.emplace_back(port);
    held.back().send_all("POST /v1/jobs HTTP/1.1\r\nHost: x\r\n" + auth +
                         "Content-Length: 100\r\n\r\n{\"base\"");
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_LT(probe(s, id), 1.0);
}

TEST_F(ServiceHttp, BareConnectsToATlsListenerTakeNoThread) {
  const std::string cert = dir_ / "cert.pem", key = dir_ / "key.pem";
  const auto made = test::run_command(
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext "
      "subjectAltName=IP:127.0.0.1 -keyout " +
      key + " -out " + cert + " 2>&1");
  ASSERT_EQ(made.rc, 0) << made.out;
  ServiceProcess s(root(), state(), {"--tls-cert", cert, "--tls-key", key, "--http-threads", "2"});
  ASSERT_TRUE(s.ready()) << s.log();
  std::vector<RawSocket> bare;
  for (int i = 0; i < 16; ++i) bare.emplace_back(test::port_of(s.url()));
  httplib::SSLClient tls("127.0.0.1", test::port_of(s.url()));
  tls.set_ca_cert_path(cert);
  tls.enable_server_certificate_verification(true);
  tls.set_read_timeout(5, 0);
  const auto t0 = Clock::now();
  const auto r = tls.Get("/healthz");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  EXPECT_LT(seconds_since(t0), 1.0);
}

TEST_F(ServiceHttp, RefusesConnectionsBeyondThePerClientLimit) {
  ServiceProcess s(root(), state(), {"--max-client-connections", "4"});
  ASSERT_TRUE(s.ready()) << s.log();
  const int port = test::port_of(s.url());
  std::vector<RawSocket> held;
  for (int i = 0; i < 4; ++i) held.emplace_back(port);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  RawSocket fifth(port);
  const std::string a = fifth.receive(std::chrono::seconds(5), "}");
  EXPECT_EQ(status_line(a), "HTTP/1.1 503 Service Unavailable") << a;
  EXPECT_NE(a.find("limit per client"), std::string::npos) << a;
  held.pop_back();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(s.client("")->Get("/healthz")->status, 200);
}
