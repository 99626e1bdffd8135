// Fuzzes the shard index parser: accept or BadInput; accepted shard names never leave the
// index's directory.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "indim/checkpoint.hpp"
#include "indim/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto map = indim::parse_shard_index(std::string_view(reinterpret_cast<const char*>(data), size),
                                        "index.json");
    for (const auto& [tensor, shard] : map)
      if (shard.find('/') != std::string::npos || shard == "..") std::abort();
  } catch (const indim::BadInput&) {
  }
  return 0;
}
