// Every malformed-header case the reader must reject, each with its message, and the
// well-formed oddities it must accept.
#include "indim/safetensors.hpp"

#include <gtest/gtest.h>

#include "indim/error.hpp"
#include "test_util.hpp"

using namespace indim;
using indim::test::st_image;

namespace {

// Parses an in-memory image and returns the BadInput message ("" when it parsed).
std::string reject(const std::vector<uint8_t>& img) {
  try {
    parse_safetensors(img.data(), img.size(), "x.safetensors");
  } catch (const BadInput& e) {
    return e.what();
  }
  return "";
}

const std::string kOne = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

struct Case {
  const char* label;
  std::vector<uint8_t> image;
  const char* message;
};

std::vector<Case> malformed_cases() {
  std::vector<Case> c;
  c.push_back({"too_small", {1, 2, 3}, "too small for a header"});
  c.push_back({"header_too_large", st_image("{}", 0, 100000001), "exceeds the limit"});
  c.push_back({"header_past_end", st_image("{}", 0, 50), "runs past the end"});
  c.push_back({"header_len_overflow", st_image("{}", 0, UINT64_MAX - 3), "exceeds the limit"});
  c.push_back({"invalid_utf8", st_image("{\"\xC3\x28\":{}}", 0), "not valid UTF-8"});
  c.push_back({"overlong_utf8", st_image("{\"\xC0\xAF\":{}}", 0), "not valid UTF-8"});
  c.push_back({"nul_byte", st_image(std::string("{}\0junk", 7), 0), "NUL byte"});
  c.push_back({"bom", st_image("\xEF\xBB\xBF{}", 0), "byte-order mark"});
  c.push_back({"lone_surrogate",
               st_image(R"({"\ud800":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})", 4),
               "invalid JSON"});
  c.push_back({"not_json", st_image("{dtype}", 0), "invalid JSON"});
  c.push_back({"trailing_garbage", st_image("{} {}", 0), "invalid JSON"});
  c.push_back({"not_object", st_image("[1,2]", 0), "not a JSON object"});
  c.push_back({"duplicate_tensor",
               st_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                        4),
               "duplicate key \"a\""});
  c.push_back({"duplicate_escaped_key",
               st_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("\u0061":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                        4),
               "duplicate key \"a\""});
  c.push_back(
      {"duplicate_nested",
       st_image(R"({"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}})", 4),
       "duplicate key \"dtype\""});
  c.push_back({"metadata_not_object", st_image(R"({"__metadata__":[1]})", 0),
               "__metadata__ is not an object"});
  c.push_back({"metadata_value", st_image(R"({"__metadata__":{"format":1}})", 0),
               "__metadata__ value for 'format' is not a string"});
  c.push_back(
      {"entry_not_object", st_image(R"({"a":5})", 0), "tensor 'a': entry is not an object"});
  c.push_back({"missing_dtype", st_image(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", 4),
               "tensor 'a': missing field 'dtype'"});
  c.push_back({"missing_shape", st_image(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", 4),
               "missing field 'shape'"});
  c.push_back({"missing_offsets", st_image(R"({"a":{"dtype":"F32","shape":[1]}})", 4),
               "missing field 'data_offsets'"});
  c.push_back({"dtype_not_string",
               st_image(R"({"a":{"dtype":32,"shape":[1],"data_offsets":[0,4]}})", 4),
               "dtype is not a string"});
  c.push_back({"unknown_dtype",
               st_image(R"({"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}})", 16),
               "unknown dtype \"F128\""});
  c.push_back({"shape_not_array",
               st_image(R"({"a":{"dtype":"F32","shape":4,"data_offsets":[0,4]}})", 4),
               "shape is not an array"});
  c.push_back({"shape_negative",
               st_image(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
               "shape holds -1"});
  c.push_back({"shape_float",
               st_image(R"({"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", 4),
               "shape holds 1.0"});
  c.push_back(
      {"shape_too_big",
       st_image(R"({"a":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,4]}})", 4),
       "not an unsigned integer"});
  c.push_back({"offsets_arity",
               st_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", 4),
               "data_offsets is not a pair"});
  c.push_back({"offsets_not_integer",
               st_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,"4"]}})", 4),
               "data_offsets holds \"4\""});
  c.push_back(
      {"numel_overflow",
       st_image(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4),
       "shape overflows the element count"});
  c.push_back(
      {"bits_overflow",
       st_image(R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}})", 8),
       "shape overflows the element count"});
  c.push_back({"sub_byte_total",
               st_image(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", 2),
               "not a whole number of bytes"});
  c.push_back({"size_mismatch",
               st_image(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
               "hold 8 bytes, but shape and F32 need 12"});
  c.push_back({"first_offset_not_zero",
               st_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
               "do not start at 0"});
  c.push_back({"gap",
               st_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                        12),
               "leave a gap after byte 4"});
  c.push_back({"overlap",
               st_image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                        8),
               "overlap the previous tensor"});
  c.push_back({"same_offsets_twice",
               st_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                        4),
               "overlap the previous tensor"});
  c.push_back({"end_before_begin",
               st_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,2]}})",
                        4),
               "end before they begin"});
  c.push_back({"truncated", st_image(kOne, 6), "truncated, or data appended"});
  c.push_back({"appended_data", st_image(kOne, 12), "truncated, or data appended"});
  c.push_back({"empty_header_with_data", st_image("{}", 4), "truncated, or data appended"});
  return c;
}

class Malformed : public ::testing::TestWithParam<Case> {};

}  // namespace

TEST_P(Malformed, RejectedWithMessage) {
  const Case& c = GetParam();
  const std::string msg = reject(c.image);
  ASSERT_FALSE(msg.empty()) << c.label << " was accepted";
  EXPECT_NE(msg.find("x.safetensors: "), std::string::npos) << msg;
  EXPECT_NE(msg.find(c.message), std::string::npos) << "got: " << msg;
}

INSTANTIATE_TEST_SUITE_P(Reader, Malformed, ::testing::ValuesIn(malformed_cases()),
                         [](const auto& info) { return std::string(info.param.label); });

TEST(Safetensors, AcceptsEmptyHeader) {
  auto img = st_image("{}", 0);
  auto h = parse_safetensors(img.data(), img.size(), "e");
  EXPECT_TRUE(h.tensors.empty());
}

TEST(Safetensors, AcceptsWhitespaceScalarsEmptyTensorsUnalignedAndUnknownFields) {
  // Header of odd length (unaligned data), surrounding whitespace, a scalar, a 0-element tensor,
  // a 2-element F4 tensor (one byte) and an unknown field.
  const std::string hdr =
      "  {\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]},"
      "\"z\":{\"dtype\":\"BF16\",\"shape\":[0,5],\"data_offsets\":[8,8]},"
      "\"q\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[8,9],\"extra\":1},"
      "\"__metadata__\":{\"format\":\"pt\"}}\n ";
  auto img = st_image(hdr, 9);
  auto h = parse_safetensors(img.data(), img.size(), "ok");
  ASSERT_EQ(h.tensors.size(), 3u);
  EXPECT_EQ(h.tensors[0].name, "s");
  EXPECT_EQ(h.tensors[0].numel(), 1u);
  EXPECT_EQ(h.tensors[1].name, "z");  // sorted by (begin, end): z [8,8] before q [8,9]
  EXPECT_EQ(h.tensors[1].numel(), 0u);
  EXPECT_EQ(h.metadata.at("format"), "pt");
  ASSERT_EQ(h.warnings.size(), 1u);
  EXPECT_NE(h.warnings[0].find("unknown field 'extra'"), std::string::npos);
}

TEST(Safetensors, WriteThenReadValuesZeroCopy) {
  test::TempDir dir;
  const std::vector<float> vals = {1.5f, -2.0f, 0.25f, 3.0f, 1e-3f, -7.0f};
  for (DType dt : {DType::F32, DType::F16, DType::BF16, DType::F64}) {
    const std::string path = dir / (std::string(dtype_name(dt)) + ".safetensors");
    write_safetensors(path, {{"w", dt, {2, 3}, encode_floats(vals, dt)},
                             {"b", DType::F32, {1}, encode_floats({9.0f}, DType::F32)}});
    auto f = SafetensorsFile::open(path);
    EXPECT_EQ((8 + f->header().header_size) % 8, 0u) << "header padded to 8";
    const TensorInfo* w = f->find("w");
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(w->shape, (std::vector<uint64_t>{2, 3}));
    std::vector<float> back(6);
    convert_elements(f->data(*w), dt, 6, back.data());
    for (size_t i = 0; i < 6; ++i) {
      float expect = vals[i];
      if (dt == DType::BF16) expect = bf16_to_float(float_to_bf16(vals[i]));
      if (dt == DType::F16) expect = fp16_to_float(float_to_fp16(vals[i]));
      EXPECT_EQ(back[i], expect) << dtype_name(dt) << " " << i;
    }
    f->release(*w);  // dropping pages must not change what a later read sees
    convert_elements(f->data(*w), dt, 6, back.data());
    EXPECT_EQ(back[3], dt == DType::F32 || dt == DType::F64 ? 3.0f : back[3]);
  }
}

TEST(Safetensors, OpenNamesTheFile) {
  test::TempDir dir;
  const std::string path = dir / "bad.safetensors";
  test::write_bytes(path, st_image("{\"a\":1}", 0));
  try {
    SafetensorsFile::open(path);
    FAIL() << "accepted";
  } catch (const BadInput& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": tensor 'a'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(SafetensorsFile::open(dir / "missing.safetensors"), BadInput);
  EXPECT_THROW(SafetensorsFile::open(dir.str()), BadInput);  // a directory is not a file
  test::write_bytes(dir / "empty", {});
  EXPECT_THROW(SafetensorsFile::open(dir / "empty"), BadInput);
}
