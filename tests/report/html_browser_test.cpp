// The HTML report in a real browser: headless Chromium (Debian's `chromium`, installed by
// scripts/setup.sh) loads the demo trio's report, runs its script without console messages,
// shows the expected number of marks, renders a screenshot, and still shows its tables with
// JavaScript disabled.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

#include "indim/analyze.hpp"
#include "indim/demo.hpp"
#include "indim/report.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace indim;

namespace {

std::string find_chromium() {
  if (const char* env = std::getenv("INDIM_CHROMIUM")) return env;
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"})
    if (fs::exists(p)) return p;
  return "";
}

struct Page {
  std::string dom;
  std::string log;
  int rc;
};

// Loads `file` headless; `extra` adds flags (a screenshot, scripts off). The flags keep
// Chromium from reaching for the network, which this machine does not have.
Page load(const std::string& chromium, const test::TempDir& dir, const std::string& file,
          const std::string& extra) {
  static int n = 0;
  const std::string out = dir / ("dom" + std::to_string(n) + ".html");
  const std::string err = dir / ("log" + std::to_string(n++) + ".txt");
  const std::string cmd =
      "timeout 120 " + chromium +
      " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run"
      " --disable-background-networking --disable-component-update --disable-sync"
      " --user-data-dir=" +
      (dir / "profile") + " --enable-logging=stderr --v=0 " + extra + " --dump-dom file://" + file +
      " > " + out + " 2> " + err;
  Page p;
  p.rc = std::system(cmd.c_str());
  p.dom = test::read_text(out);
  p.log = test::read_text(err);
  return p;
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + what.size())) ++n;
  return n;
}

class Browser : public ::testing::Test {
 protected:
  void SetUp() override {
    chromium_ = find_chromium();
    if (chromium_.empty()) GTEST_SKIP() << "no chromium found (scripts/setup.sh installs it)";
  }
  std::string chromium_;
  test::TempDir dir_;
};

}  // namespace

TEST_F(Browser, ConsoleCaptureSeesErrors) {
  // The check below is only worth something if a page's errors do reach the log.
  const std::string bad = dir_ / "bad.html";
  test::write_text(bad, "<html><body><script>undefinedFunction();</script></body></html>");
  Page p = load(chromium_, dir_, bad, "");
  EXPECT_NE(p.log.find("Uncaught ReferenceError"), std::string::npos) << p.log;
}

TEST_F(Browser, DemoReportLoadsWithMarksAndWithoutScripts) {
  DemoOptions d;
  d.hidden = 48, d.intermediate = 112, d.kv_dim = 24, d.layers = 3, d.vocab = 64, d.lora_rank = 4;
  DemoPaths paths = generate_demo(dir_.str(), d);
  AnalyzeOptions o;
  o.base = paths.base;
  o.tuned = {paths.full, paths.lora};
  o.out_dir = dir_ / "out";
  o.backend = "cpu";
  o.html = true;
  o.plot_matrices = {"layers\\.1\\.self_attn\\.(q|v)_proj"};
  AnalyzeResult res = analyze(o);
  ASSERT_FALSE(res.report_html.empty());
  const std::string html = test::read_text(res.report_html);
  EXPECT_EQ(html.find("http://"), html.find("http://www.w3.org/2000/svg")) << "no network";
  EXPECT_EQ(html.find("https://"), std::string::npos) << "no network";
  EXPECT_EQ(html.find("<script src"), std::string::npos);

  int intruders = 0, sigma_pts = 0, plotted = 0, tested = 0;
  for (const auto& r : res.records)
    if (std::regex_search(r.name, std::regex(o.plot_matrices[0]))) {
      intruders += r.count_at(0.5);
      sigma_pts += static_cast<int>(r.sigma_head.size());
      tested += r.k - r.null_directions;
      ++plotted;
    }
  ASSERT_EQ(plotted, 4);  // q and v of layer 1, for each fine-tune
  ASSERT_GT(intruders, 0);

  Page p = load(chromium_, dir_, fs::absolute(res.report_html).string(),
                "--window-size=1300,2000 --screenshot=" + (dir_ / "report.png"));
  EXPECT_NE(p.dom.find("data-js=\"ready\""), std::string::npos) << "script ran to its end";
  EXPECT_EQ(p.log.find(":CONSOLE"), std::string::npos) << p.log;
  EXPECT_EQ(count(p.dom, "class=\"hm-cell\""), 2u * 3u * 7u);  // fine-tunes x layers x types
  EXPECT_EQ(count(p.dom, "class=\"sweep-pt\""), 2u * 9u);      // fine-tunes x eps grid
  EXPECT_EQ(count(p.dom, "class=\"cos-row\""), 4u * 10u);      // plotted matrices x k
  EXPECT_EQ(count(p.dom, "class=\"intruder-mark\""), static_cast<size_t>(intruders));
  EXPECT_EQ(count(p.dom, "intruder-sigma"), static_cast<size_t>(intruders));
  EXPECT_EQ(count(p.dom, "class=\"sigma-pt"), static_cast<size_t>(sigma_pts));
  EXPECT_EQ(count(p.dom, "<tr><td>"), res.records.size() + 2);  // matrix rows + totals rows
  // The measures: per fine-tune a row for all and one per type; max |cos| with its null line.
  EXPECT_EQ(count(p.dom, "class=\"measures-row\""), 2u * (1u + 7u));
  EXPECT_EQ(count(p.dom, "class=\"maxcos-pt\""), static_cast<size_t>(tested));
  EXPECT_EQ(count(p.dom, "class=\"null-line\""), 4u);
  // The trajectory view of the two fine-tunes: per type, per layer, and their eps sweeps.
  EXPECT_EQ(count(p.dom, "class=\"traj-count-pt\""), 7u * 2u);
  EXPECT_EQ(count(p.dom, "class=\"traj-share-pt\""), 7u * 2u);
  EXPECT_EQ(count(p.dom, "class=\"traj-layer-cell\""), 3u * 2u);
  EXPECT_EQ(count(p.dom, "class=\"traj-sweep-cell\""), 2u * 9u);
  ASSERT_TRUE(fs::exists(dir_ / "report.png"));
  EXPECT_GT(fs::file_size(dir_ / "report.png"), 20000u);
  EXPECT_EQ(test::read_text(dir_ / "report.png").substr(1, 3), "PNG");

  // Scripts off: the report inside a sandboxed iframe without allow-scripts, inspected by the
  // wrapper page's own script. The control frame allows scripts and must differ.
  for (const bool scripts : {false, true}) {
    const std::string wrap = dir_ / (scripts ? "wrap-js.html" : "wrap-nojs.html");
    test::write_text(
        wrap, std::string("<html><body><iframe id=\"f\" sandbox=\"allow-same-origin") +
                  (scripts ? " allow-scripts" : "") + "\" src=\"file://" +
                  fs::absolute(res.report_html).string() +
                  "\"></iframe><script>document.getElementById('f').addEventListener('load',"
                  "function(){var d=this.contentDocument,t=d.getElementById('matrix-table');"
                  "document.body.setAttribute('data-inner-js',d.body.getAttribute('data-js')||"
                  "'none');document.body.setAttribute('data-rows',t?t.rows.length:-1);"
                  "document.body.setAttribute('data-hm',d.querySelectorAll('.hm-cell').length);"
                  "document.body.setAttribute('data-totals',d.getElementById('totals')?1:0);"
                  "var th=t.tHead.rows[0].cells[7];th.click();th.click();"
                  "document.body.setAttribute('data-top',t.tBodies[0].rows[0].cells[7]"
                  ".textContent);"
                  "});</script></body></html>");
    Page w = load(chromium_, dir_, wrap, "--allow-file-access-from-files");
    EXPECT_NE(w.dom.find(scripts ? "data-inner-js=\"ready\"" : "data-inner-js=\"none\""),
              std::string::npos)
        << w.dom;
    EXPECT_NE(w.dom.find("data-rows=\"" + std::to_string(res.records.size() + 1) + "\""),
              std::string::npos)
        << "the matrix table shows without scripts: " << w.dom;
    EXPECT_NE(w.dom.find("data-hm=\"42\""), std::string::npos) << w.dom;
    EXPECT_NE(w.dom.find("data-totals=\"1\""), std::string::npos) << w.dom;
    if (scripts) {  // two clicks on the intruder column sort it descending
      int most = 0;
      for (const auto& r : res.records) most = std::max(most, r.count_at(0.5));
      EXPECT_NE(w.dom.find("data-top=\"" + std::to_string(most) + "\""), std::string::npos)
          << w.dom;
    }
  }
}

TEST(Html, SevenBillionShapedRunStaysSmall) {
  // 224 matrices x 2 fine-tunes with Llama-7B names and plot data, as a 7B run produces.
  AnalyzeResult res;
  res.eps = eps_grid({0.5});
  res.backend = "cpu";
  res.header.base.path = "base", res.header.base.kind = "sharded", res.header.base.tensors = 291;
  res.header.k = 10, res.header.side = "left", res.header.precision = "fp32";
  res.header.algo = "gesdd";
  const char* types[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                         "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                         "mlp.down_proj"};
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0, 1);
  for (int t = 0; t < 2; ++t) {
    res.tuned.push_back({"tuned" + std::to_string(t), 224, res.eps, std::vector<int>(9, 0)});
    for (int l = 0; l < 32; ++l)
      for (const char* ty : types) {
        MatrixResult r;
        r.tuned_index = t;
        r.name = "model.layers." + std::to_string(l) + "." + ty + ".weight";
        r.layer = l, r.type = ty, r.shape = {4096, 4096}, r.dtype = "BF16", r.k = 10;
        for (int j = 0; j < 10; ++j) {
          r.maxcos.push_back(u(rng)), r.argmax.push_back(j);
          r.sigma.push_back(1.0 / (j + 1)), r.sigma_ratio.push_back(1.0 / (j + 1));
        }
        count_intruders(r, res.eps);
        r.head_cols = kPlotHead;
        for (int i = 0; i < 10 * kPlotHead; ++i) r.cos_head.push_back(u(rng));
        for (int i = 0; i < kPlotHead; ++i)
          r.sigma_head.push_back(1.0 / (i + 1)), r.base_sigma_head.push_back(1.0 / (i + 1));
        res.records.push_back(r);
      }
  }
  const std::string html = format_html(res, HtmlOptions{});
  RecordProperty("bytes_7b_shaped", static_cast<int>(html.size()));
  std::printf("report.html for a 7B-shaped run (448 matrices, 8 plotted): %zu bytes\n",
              html.size());
  EXPECT_LT(html.size(), 1500000u);
}
