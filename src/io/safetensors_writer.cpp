#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "indim/error.hpp"
#include "indim/safetensors.hpp"
#include "io/atomic_file.hpp"

namespace indim {

std::vector<uint8_t> encode_floats(const std::vector<float>& values, DType dtype) {
  std::vector<uint8_t> out;
  auto put = [&out](uint64_t v, int nbytes) {
    for (int i = 0; i < nbytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  out.reserve(values.size() * 8);
  for (float f : values) {
    switch (dtype) {
      case DType::F32: {
        uint32_t u;
        std::memcpy(&u, &f, 4);
        put(u, 4);
        break;
      }
      case DType::F64: {
        double d = f;
        uint64_t u;
        std::memcpy(&u, &d, 8);
        put(u, 8);
        break;
      }
      case DType::BF16:
        put(float_to_bf16(f), 2);
        break;
      case DType::F16:
        put(float_to_fp16(f), 2);
        break;
      default:
        throw Error(std::string("cannot encode floats as ") + dtype_name(dtype));
    }
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<TensorData>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // Larger elements first keeps every tensor aligned to its element size, as writers do.
  std::vector<const TensorData*> order;
  for (const auto& t : tensors) order.push_back(&t);
  std::stable_sort(order.begin(), order.end(), [](const TensorData* a, const TensorData* b) {
    return dtype_bits(a->dtype) > dtype_bits(b->dtype);
  });
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorData* t : order) {
    uint64_t bits = dtype_bits(t->dtype);
    for (uint64_t d : t->shape) bits *= d;
    if (bits / 8 != t->bytes.size())
      throw Error(path + ": tensor '" + t->name + "' has " + std::to_string(t->bytes.size()) +
                  " bytes, its shape needs " + std::to_string(bits / 8));
    header[t->name] = {{"dtype", dtype_name(t->dtype)},
                       {"shape", t->shape},
                       {"data_offsets", {offset, offset + t->bytes.size()}}};
    offset += t->bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(uint64_t(text.size()) >> (8 * i));
  detail::AtomicFile f(path);
  f.write(len, 8);
  f.write(text);
  for (const TensorData* t : order) f.write(t->bytes.data(), t->bytes.size());
  f.commit();
}

}  // namespace indim
