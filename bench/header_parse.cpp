// Parses a generated safetensors header of N tensors (default 1,000,000, the most that fit
// under the 100 MB header limit with short names) and prints the time and peak memory.
//   build/bench/indim_bench_header [N]
// The floor: one pass over the header bytes; the callback parser indim used before was
// quadratic in N (50k tensors: 73 s).
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "indim/safetensors.hpp"

int main(int argc, char** argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : 1000000;
  std::string h = "{";
  h.reserve(static_cast<size_t>(n) * 80);
  for (long i = 0; i < n; ++i)
    h += (i ? "," : "") + std::string("\"l.") + std::to_string(i) +
         "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[" + std::to_string(4 * i) + "," +
         std::to_string(4 * i + 4) + "]}";
  h += "}";
  std::vector<uint8_t> img(8 + h.size() + 4 * static_cast<size_t>(n), 0);
  for (int i = 0; i < 8; ++i) img[i] = static_cast<uint8_t>(h.size() >> (8 * i));
  std::copy(h.begin(), h.end(), img.begin() + 8);
  const auto t0 = std::chrono::steady_clock::now();
  const indim::SafetensorsHeader parsed = indim::parse_safetensors(img.data(), img.size(), "gen");
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  std::printf("%ld tensors, header %.1f MB: parsed in %.2f s, peak RSS %.0f MB\n",
              static_cast<long>(parsed.tensors.size()), h.size() / 1e6, s, ru.ru_maxrss / 1024.0);
  return 0;
}
