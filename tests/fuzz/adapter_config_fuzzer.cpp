// Fuzzes adapter_config.json parsing: accept or BadInput; an accepted config has a positive
// rank and scales that can be computed for any module name.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "indim/error.hpp"
#include "indim/peft.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    indim::LoraConfig c = indim::parse_adapter_config(
        std::string_view(reinterpret_cast<const char*>(data), size), "adapter_config.json");
    if (c.r <= 0) std::abort();
    static const std::string long_name = "model." + std::string(100000, 'a') + ".q_proj";
    for (const std::string& m : {std::string("model.layers.0.self_attn.q_proj"),
                                 std::string("h.3.attn.c_attn"), std::string("x"), long_name})
      if (c.rank_for(m) <= 0) std::abort();
    (void)c.scale_for("model.layers.0.mlp.up_proj");
  } catch (const indim::BadInput&) {
  }
  return 0;
}
