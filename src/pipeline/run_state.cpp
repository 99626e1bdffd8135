#include "pipeline/run_state.hpp"

namespace indim::detail {

std::vector<Side> record_sides(Side side) {
  if (side == Side::Both) return {Side::Left, Side::Right};
  return {side};
}

RunState::RunState(const AnalyzeOptions& o, Journal& journal, Plan& plan)
    : o_(o), journal_(journal), sides_(record_sides(o.side)) {
  total_ = static_cast<int>(plan.units() * sides_.size());
  if (o_.observer) o_.observer->planned(static_cast<int>(plan.units()), plan.cost());
  for (PlanEntry& e : plan.entries)
    for (WorkUnit& u : e.units) {
      bool all = true;
      for (Side s : sides_) {
        auto prev = journal.previous().find({u.tuned_index, u.name, side_name(s)});
        if (prev == journal.previous().end()) {
          all = false;
          continue;
        }
        records_[prev->first] = prev->second, ++resumed_;
      }
      u.pending = !all;
      if (all && o_.observer) o_.observer->unit_finished(event(u, true));
      units_finished_ += all ? 1 : 0;
    }
  done_ = resumed_;
}

UnitEvent RunState::event(const WorkUnit& u, bool resumed) const {
  return {u.tuned_index, u.name, u.cost, resumed};
}

void RunState::note(const std::string& line) {
  std::lock_guard<std::mutex> lock(mu_);
  if (o_.note) o_.note(line);
}

void RunState::started(const WorkUnit& u) {
  std::lock_guard<std::mutex> lock(mu_);
  if (o_.observer) o_.observer->unit_started(event(u, false));
}

void RunState::finished(const WorkUnit& u, const std::vector<MatrixResult>& records) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const MatrixResult& r : records) {
    journal_.append(r);
    records_[{r.tuned_index, r.name, r.side}] = r;
    ++done_;
    if (o_.progress) o_.progress(done_, total_, u.name);
  }
  ++units_finished_;
  if (o_.observer) o_.observer->unit_finished(event(u, false));
}

}  // namespace indim::detail
