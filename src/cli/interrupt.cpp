#include "cli/interrupt.hpp"

#include <unistd.h>

#include <csignal>

namespace indim::cli {

namespace {

CancelToken g_token;
struct sigaction g_old_int, g_old_term;

extern "C" void on_interrupt(int sig) {
  if (g_token.cancelled()) {  // the second time: stop now, as the default action would
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  g_token.cancel();
  static const char kText[] =
      "\nindim: interrupted; finishing the matrices in progress, then writing a resumable "
      "journal (press Ctrl-C again to stop at once)\n";
  const ssize_t n = ::write(STDERR_FILENO, kText, sizeof kText - 1);
  (void)n;
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
