// Fuzzes the safetensors validator on whole file images: it must accept or throw BadInput,
// never crash, read out of bounds or leak. An accepted header must describe in-bounds tensors.
#include <cstdint>
#include <cstdlib>

#include "indim/error.hpp"
#include "indim/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    indim::SafetensorsHeader h = indim::parse_safetensors(data, size, "fuzz.safetensors");
    for (const auto& t : h.tensors)
      if (h.data_start() + t.end > size || t.begin > t.end) std::abort();
  } catch (const indim::BadInput&) {
  }
  return 0;
}
