#include "cli/interrupt.hpp"

#include <unistd.h>

#include <csignal>

namespace indim::cli {

namespace {

CancelToken g_token;
struct sigaction g_old_int, g_old_term;

void say(const char* text, size_t n) {
  const ssize_t w = ::write(STDERR_FILENO, text, n);
  (void)w;
}

extern "C" void on_interrupt(int sig) {
  if (g_token.stop_requested()) {  // the third time: end the process, as the default would
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  if (g_token.cancelled()) {
    g_token.stop_now();
    static const char kNow[] =
        "\nindim: stopping the matrices in progress at their next sweep (Ctrl-C again ends the "
        "process)\n";
    say(kNow, sizeof kNow - 1);
    return;
  }
  g_token.cancel();
  static const char kText[] =
      "\nindim: interrupted; finishing the matrices in progress, then writing a resumable "
      "journal (Ctrl-C again to stop them sooner)\n";
  say(kText, sizeof kText - 1);
}

}  // namespace

InterruptScope::InterruptScope() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &g_old_int);
  sigaction(SIGTERM, &sa, &g_old_term);
}

InterruptScope::~InterruptScope() {
  sigaction(SIGINT, &g_old_int, nullptr);
  sigaction(SIGTERM, &g_old_term, nullptr);
}

const CancelToken& InterruptScope::token() const { return g_token; }

}  // namespace indim::cli
