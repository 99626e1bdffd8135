#include <gtest/gtest.h>
#include "indim/dtype.hpp"
TEST(Dummy, Builds) { EXPECT_EQ(indim::dtype_bits(indim::DType::BF16), 16); }
