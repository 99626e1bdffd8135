// The backend registry: each backend's name, algorithms and capabilities, and how a run's
// workers are built. Adding a backend: one entry here (and its own source file).
#include <algorithm>

#include "indim/backend.hpp"
#include "indim/error.hpp"

namespace indim {

namespace {

std::vector<std::unique_ptr<Backend>> cpu_fleet(const FleetOptions& o) {
  std::vector<std::unique_ptr<Backend>> out;
  for (int w = 0; w < std::max(o.workers, 1); ++w)
    out.push_back(make_cpu_backend(o.precision, o.algo));
  return out;
}

// One backend per stream per device; the streams of a device share its budget.
std::vector<std::unique_ptr<Backend>> cuda_fleet(const FleetOptions& o) {
  std::vector<std::unique_ptr<Backend>> out;
  for (int dev : o.devices.empty() ? std::vector<int>{0} : o.devices)
    for (auto& b : make_cuda_backends(o.precision, o.algo, dev, o.gpu_mem, o.streams))
      out.push_back(std::move(b));
  return out;
}

std::vector<BackendSpec> make_registry() {
  std::vector<BackendSpec> r;
  // On the CPU gram64 was 1.9-2.7x faster than gesdd and 40x closer to the fp64 reference
  // (bench/RESULTS.md), so it is the default of both.
  r.push_back({"cuda",
               "CUDA",
               "cuSOLVER",
               "CUDA device",
               {"gram64", "gesvd", "gesvdp", "gesvdj"},
               /*device=*/true,
               cuda_device_count,
               cuda_fleet});
  r.push_back({"cpu",
               "CPU",
               "LAPACK",
               "CPU",
               {"gram64", "gesdd"},
               /*device=*/false,
               [](std::string*) { return 1; },
               cpu_fleet});
  return r;
}

bool runs(const BackendSpec& b, const std::string& algo) {
  return algo == "auto" || std::find(b.algos.begin(), b.algos.end(), algo) != b.algos.end();
}

std::string joined(const std::vector<std::string>& set) {
  std::string s;
  for (const auto& a : set) s += (s.empty() ? "" : ", ") + a;
  return s;
}

// "--algo must be auto, gram64, gesdd (cpu) or ..." for an algorithm no backend runs.
std::string unknown_algo(const std::string& algo) {
  std::string list;
  const auto& reg = backend_registry();
  for (size_t i = reg.size(); i-- > 0;)
    list += (list.empty() ? "" : " or ") + joined(reg[i].algos) + " (" + reg[i].name + ")";
  return "--algo must be auto, " + list + ", not \"" + algo + "\"";
}

// The one backend that runs `algo`, for "runs on the ... backend only".
std::string only_runner(const std::string& algo) {
  std::string s;
  for (const auto& b : backend_registry())
    if (runs(b, algo)) s += (s.empty() ? "" : " or ") + b.title;
  return s;
}

std::vector<std::unique_ptr<Backend>> build(const BackendSpec& b, FleetOptions o) {
  if (o.algo == "auto") o.algo = b.algos.front();
  return b.make(o);
}

}  // namespace

const std::vector<BackendSpec>& backend_registry() {
  static const std::vector<BackendSpec> registry = make_registry();
  return registry;
}

const BackendSpec* find_backend(const std::string& name) {
  for (const auto& b : backend_registry())
    if (b.name == name) return &b;
  return nullptr;
}

std::vector<std::string> backend_choices() {
  std::vector<std::string> names{"auto"};
  for (const auto& b : backend_registry()) names.push_back(b.name);
  return names;
}

std::vector<std::string> algo_choices() {
  std::vector<std::string> algos{"auto"};
  for (const auto& b : backend_registry())
    for (const auto& a : b.algos)
      if (std::find(algos.begin(), algos.end(), a) == algos.end()) algos.push_back(a);
  return algos;
}

std::vector<std::unique_ptr<Backend>> make_fleet(const std::string& name,
                                                 const FleetOptions& options, std::string* note) {
  const auto& reg = backend_registry();
  if (std::none_of(reg.begin(), reg.end(), [&](const auto& b) { return runs(b, options.algo); }))
    throw UsageError(unknown_algo(options.algo));
  if (name != "auto") {
    const BackendSpec* b = find_backend(name);
    if (b == nullptr)
      throw UsageError("--backend must be " + joined(backend_choices()) + ", not \"" + name + "\"");
    if (!runs(*b, options.algo))
      throw UsageError("--algo " + options.algo + " runs on the " + only_runner(options.algo) +
                       " backend only");
    return build(*b, options);
  }
  std::string skipped, why_none;  // the device backends passed over, and why
  for (const auto& b : reg) {
    if (!runs(b, options.algo)) continue;
    std::string why;
    if (b.available(&why) > 0) {
      if (note != nullptr && !skipped.empty())
        *note = "indim: " + skipped + "; using the " + b.title + " backend (" + b.library + ")";
      return build(b, options);
    }
    if (why_none.empty()) why_none = why;
    if (b.device)
      skipped +=
          std::string(skipped.empty() ? "" : "; ") + "no usable " + b.unit + " (" + why + ")";
  }
  throw UsageError("--algo " + options.algo + " needs a " + only_runner(options.algo) +
                   " device (" + why_none + ")");
}

std::unique_ptr<Backend> make_backend(const std::string& name, Precision precision,
                                      std::string* note, const std::string& algo, uint64_t gpu_mem,
                                      int device) {
  FleetOptions o;
  o.precision = precision;
  o.algo = algo;
  o.gpu_mem = gpu_mem;
  o.devices = {device};
  return std::move(make_fleet(name, o, note).front());
}

}  // namespace indim
