#include "cli/options.hpp"

#include "cli/registry_help.hpp"
#include "indim/backend.hpp"

namespace indim::cli {

CLI::Validator in_range(const std::string& option, long long lo, long long hi) {
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        long long v = 0;
        size_t used = 0;
        try {
          v = std::stoll(text, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used == 0 || used != text.size() || v < lo || v > hi)
          return "must be a whole number from " + std::to_string(lo) + " to " + std::to_string(hi) +
                 ", not \"" + text.substr(0, 40) + "\"";
        return "";
      },
      "INT in [" + std::to_string(lo) + " - " + std::to_string(hi) + "]", option);
}

void add_analysis_options(CLI::App* cmd, AnalysisFlags& f) {
  cmd->add_option("--k", f.k,
                  "Top singular vectors of the tuned matrix to test (at most min(out, in) are: "
                  "records say k_clamped)")
      ->capture_default_str()
      ->check(in_range("--k", 1, 1 << 30));
  cmd->add_option("--eps", f.eps, "Intruder threshold(s), comma separated; the first is primary")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--precision", f.precision, "Arithmetic of the decomposition")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "fp64"}));
  cmd->add_option("--side", f.side, "Singular vectors to compare")
      ->capture_default_str()
      ->check(CLI::IsMember({"left", "right", "both"}));
  cmd->add_option("--algo", f.algo, "Decomposition: " + algos_help())
      ->capture_default_str()
      ->check(CLI::IsMember(algo_choices()));
  cmd->add_option("--plot-matrices", f.plot_matrices,
                  "Regex of matrices drawn in detail in report.html");
  cmd->add_option("--plot-top", f.plot_top,
                  "Without --plot-matrices: draw the N matrices with most intruders per fine-tune")
      ->capture_default_str()
      ->check(in_range("--plot-top", 0, 24));
}

void add_selection_options(CLI::App* cmd, AnalysisFlags& f) {
  cmd->add_option("--include", f.include, "Regex of base tensor names to analyse");
  cmd->add_option("--exclude", f.exclude, "Regex of base tensor names to skip");
  cmd->add_flag("--split-fused", f.split_fused,
                "Analyse Q/K/V of fused attention and gate/up of gate_up_proj apart "
                "(needs config.json for heads)");
  cmd->add_flag("--html", f.html, "Also write report.html (self-contained, with plots)");
  cmd->add_flag("--delta", f.delta,
                "Also describe each update W - W0: norms, rank, effective rank");
  auto* nf = cmd->add_flag("--noise-floor", f.noise_floor,
                           "Also measure each matrix's noise floor: the base against an "
                           "independent re-quantisation of itself in the fine-tune's format "
                           "(default where either side is quantised: FP8, MXFP4)");
  cmd->add_flag("--no-noise-floor", f.no_noise_floor,
                "Skip the noise floor, even where a side is quantised")
      ->excludes(nf);
  cmd->add_flag("--no-lowrank", f.no_lowrank,
                "Decompose LoRA adapters merged (the full route) instead of by the exact "
                "low-rank route from the base's decomposition");
  cmd->add_option("--lowrank-tol", f.lowrank_tol,
                  "Certificate bound of the low-rank route, relative residual on the real "
                  "matrix (0: 1e-6 in fp32, 1e-10 in fp64); above it a matrix takes the full route")
      ->check(CLI::Range(0.0, 0.999999));
}

AnalyzeOptions::NoiseFloorMode noise_floor_mode(bool on, bool off) {
  return on    ? AnalyzeOptions::NoiseFloorMode::On
         : off ? AnalyzeOptions::NoiseFloorMode::Off
               : AnalyzeOptions::NoiseFloorMode::Auto;
}

nlohmann::json to_job_options(const AnalysisFlags& f) {
  return {{"k", f.k},
          {"eps", f.eps},
          {"precision", f.precision},
          {"side", f.side},
          {"algo", f.algo},
          {"include", f.include},
          {"exclude", f.exclude},
          {"split_fused", f.split_fused},
          {"delta", f.delta},
          {"lowrank", !f.no_lowrank},
          {"lowrank_tol", f.lowrank_tol},
          {"noise_floor", f.noise_floor      ? "on"
                          : f.no_noise_floor ? "off"
                                             : "auto"},
          {"html", f.html},
          {"plot_matrices", f.plot_matrices},
          {"plot_top", f.plot_top}};
}

}  // namespace indim::cli
