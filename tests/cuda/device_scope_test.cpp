// Which device a thread is left on by cuda/device_scope.hpp, driven by recorded device calls:
// the scope restores only what it changed, and never selects a device for a thread that had no
// context before (that would create a context on device 0 for a run on device 1).
#include "cuda/device_scope.hpp"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace {

// The thread's device state and every call the scope makes on it.
struct Thread {
  int current = 0;
  bool context = false;
  std::vector<std::string> calls;
};

struct Recorded {
  Thread* t;
  int current() const { return t->current; }
  void select(int d) const {
    if (d < 0) throw std::runtime_error("no such device");
    t->calls.push_back("select " + std::to_string(d));
    t->current = d, t->context = true;
  }
  void restore(int d) const noexcept {
    t->calls.push_back("restore " + std::to_string(d));
    t->current = d;
  }
  bool has_context() const noexcept { return t->context; }
};

using Scope = indim::detail::BasicDeviceScope<Recorded>;

}  // namespace

TEST(DeviceScope, AThreadThatNeverUsedCudaIsLeftOnTheDeviceItWasGiven) {
  Thread t;  // reports device 0 current, with no context there
  { const Scope s(1, Recorded{&t}); }
  EXPECT_EQ(t.calls, (std::vector<std::string>{"select 1"})) << "restoring 0 creates a context";
  EXPECT_EQ(t.current, 1);
}

TEST(DeviceScope, AThreadWithAContextGetsItsDeviceBack) {
  Thread t;
  t.current = 2, t.context = true;  // a library caller working on device 2
  {
    const Scope s(1, Recorded{&t});
    EXPECT_EQ(t.current, 1);
  }
  EXPECT_EQ(t.calls, (std::vector<std::string>{"select 1", "restore 2"}));
  EXPECT_EQ(t.current, 2);
}

TEST(DeviceScope, TheCurrentDeviceIsNeitherSelectedNorRestored) {
  Thread t;
  t.current = 1, t.context = true;
  { const Scope s(1, Recorded{&t}); }
  Thread fresh;  // device 0 without a context: a scope on 0 changes nothing either
  { const Scope s(0, Recorded{&fresh}); }
  EXPECT_TRUE(t.calls.empty());
  EXPECT_TRUE(fresh.calls.empty());
}

TEST(DeviceScope, NestedScopesUnwindInOrder) {
  Thread t;
  t.current = 0, t.context = true;
  {
    const Scope outer(1, Recorded{&t});
    {
      const Scope inner(2, Recorded{&t});
      EXPECT_EQ(t.current, 2);
    }
    EXPECT_EQ(t.current, 1);
  }
  EXPECT_EQ(t.current, 0);
  EXPECT_EQ(t.calls, (std::vector<std::string>{"select 1", "select 2", "restore 1", "restore 0"}));
}

TEST(DeviceScope, AFailedSelectRestoresNothing) {
  Thread t;
  t.current = 3, t.context = true;
  EXPECT_THROW(Scope(-1, Recorded{&t}), std::runtime_error);
  EXPECT_TRUE(t.calls.empty());
  EXPECT_EQ(t.current, 3);
}
