// The HTML report's expert axis: a layer x expert map per fine-tune and expert matrix type,
// small and readable at 256 experts (a few pixels a cell, tooltips only where there are
// intruders), and the noise floor table.
#include <gtest/gtest.h>

#include <regex>

#include "indim/report.hpp"

using namespace indim;

namespace {

MatrixResult record(int layer, int expert, int count) {
  MatrixResult r;
  r.name = "model.layers." + std::to_string(layer) + ".mlp.experts." + std::to_string(expert) +
           ".gate_proj.weight";
  r.tuned_name = r.name;
  r.layer = layer;
  r.type = "mlp.experts.*.gate_proj";
  r.expert = expert;
  r.shape = {2048, 7168};
  r.k = 10;
  r.maxcos.assign(10, 0.9);
  for (int j = 0; j < count; ++j) r.maxcos[j] = 0.1;
  r.argmax.assign(10, 0);
  r.sigma.assign(10, 1.0);
  r.sigma_ratio.assign(10, 1.0);
  r.eps = {0.5};
  r.counts = {count};
  return r;
}

}  // namespace

TEST(ExpertMap, ReadableAt256Experts) {
  AnalyzeResult res;
  res.eps = {0.5};
  res.tuned.push_back({"tuned", 0, {0.5}, {0}, 0});
  int nonzero = 0;
  for (int l = 3; l < 61; ++l)
    for (int e = 0; e < 256; ++e) {
      const int c = (l * 7 + e * 13) % 29 == 0 ? 2 : 0;
      nonzero += c > 0;
      res.records.push_back(record(l, e, c));
      res.tuned[0].matrices++;
    }
  HtmlOptions o;
  const std::string html = format_html(res, o);
  const size_t at = html.find("<section id=\"experts\">");
  ASSERT_NE(at, std::string::npos);
  const std::string section = html.substr(at, html.find("</section>", at) - at);
  std::smatch m;
  ASSERT_TRUE(
      std::regex_search(section, m, std::regex("class=\"expert-map\"[^>]*width=\"(\\d+)\"")));
  EXPECT_LE(std::stoi(m[1]), 900);  // 256 columns of 3 px and the labels: fits a screen
  size_t cells = 0;
  for (size_t p = section.find("ex-cell"); p != std::string::npos;
       p = section.find("ex-cell", p + 1))
    ++cells;
  EXPECT_EQ(cells, static_cast<size_t>(nonzero));
  EXPECT_NE(section.find("<title>layer 3, expert 14: 2</title>"), std::string::npos);
  EXPECT_LT(section.size(), 400000u);  // 14848 matrices in well under half a megabyte
  EXPECT_NE(section.find("mlp.experts.*.gate_proj (256 experts)"), std::string::npos);
  // No experts, no section.
  res.records.resize(1);
  res.records[0].expert = -1;
  EXPECT_EQ(format_html(res, o).find("id=\"experts\""), std::string::npos);
}
