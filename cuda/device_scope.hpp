// Which device the calling thread works on, switched for a scope and put back only where that
// is right. Host-only: the scope is a template over the device calls, so the tests drive its
// decisions on any machine (tests/cuda/device_scope_test.cpp); the CUDA backend instantiates it
// with the runtime's calls (cuda/resources.hpp).
#pragma once

namespace indim::detail {

/// @brief Makes `device` current for the calling thread while it lives. Devices has `int
/// current()` and `void select(int)` (both may throw), `void restore(int)` (never throws) and
/// `bool has_context()` (whether the thread has a current context; never throws).
///
/// It restores the previous device only when it changed it and the thread had a context before
/// (FAISS's scope restores only what it changed). A thread that never used CUDA reports device
/// 0 current without a context there; restoring 0 on it would create one (hundreds of MB, and
/// a failure when GPU 0 is exclusive and busy) on a device the run may not use at all. Such a
/// thread (a worker, the loader, a service's dispatch thread) is left on `device`.
template <typename Devices>
class BasicDeviceScope {
 public:
  explicit BasicDeviceScope(int device, Devices devices = Devices()) : devices_(devices) {
    const int current = devices_.current();
    if (current == device) return;
    const bool had_context = devices_.has_context();
    devices_.select(device);
    if (had_context) restore_ = current;
  }
  ~BasicDeviceScope() {
    if (restore_ >= 0) devices_.restore(restore_);
  }
  BasicDeviceScope(const BasicDeviceScope&) = delete;
  BasicDeviceScope& operator=(const BasicDeviceScope&) = delete;

 private:
  Devices devices_;
  int restore_ = -1;  // the device to put back, or -1: none
};

}  // namespace indim::detail
