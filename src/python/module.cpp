// indim._indim: the library for Python (pybind11). The analysis runs on a thread of its own with
// the GIL released; the calling thread waits in short slices, handing progress to the Python
// callback and turning Ctrl-C (KeyboardInterrupt) into the cancellation token.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <condition_variable>
#include <deque>
#include <exception>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "indim/demo.hpp"
#include "indim/indim.hpp"
#include "report/report.hpp"
#include "service/api_error.hpp"
#include "service/job_request.hpp"

namespace py = pybind11;
using namespace indim;

namespace {

// A finished run with the options that made it, so that it can be written later.
struct PyResult {
  AnalyzeResult result;
  AnalyzeOptions options;
  std::string report_json() const {
    return detail::build_report(result, options.eps.front()).dump(2) + "\n";
  }
  std::string html() const {
    return format_html(result,
                       {options.eps.front(), options.k, options.plot_matrices, options.plot_top});
  }
  void write(const std::string& out_dir, bool html) {
    std::error_code ec;
    std::filesystem::create_directories(out_dir, ec);
    if (ec) throw Error(out_dir + ": cannot create the output folder: " + ec.message());
    AnalyzeOptions o = options;
    o.out_dir = out_dir;
    o.html = html;
    write_outputs(result, o);
  }
};

// Progress as the worker reports it, queued for the calling thread (which holds the GIL).
struct ProgressEvent {
  int done = 0, total = 0;
  double cost_done = 0, cost_total = 0;
  std::string name;
};

class QueueObserver final : public RunObserver {
 public:
  void planned(int units, const UnitCost& total) override {
    push({done_, total_ = units, cost_done_, cost_total_ = total.flops, ""});
  }
  void unit_finished(const UnitEvent& u) override {
    cost_done_ += u.cost.flops;
    push({++done_, total_, cost_done_, cost_total_, u.name});
  }
  std::deque<ProgressEvent> take() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::exchange(events_, {});
  }

 private:
  void push(ProgressEvent e) {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(e));
  }
  std::mutex mu_;
  std::deque<ProgressEvent> events_;
  int done_ = 0, total_ = 0;
  double cost_done_ = 0, cost_total_ = 0;
};

std::vector<std::string> strings(const nlohmann::json& j) {
  return j.get<std::vector<std::string>>();
}

// The analysis options of the keyword arguments, checked as the CLI and the service check them.
AnalyzeOptions make_options(const std::string& base, const std::vector<std::string>& tuned,
                            const py::dict& analysis, const py::dict& compute) {
  nlohmann::json given = nlohmann::json::parse(
      py::str(py::module_::import("json").attr("dumps")(analysis)).cast<std::string>());
  nlohmann::json checked;
  try {
    checked = service::check_job_options(given);
  } catch (const service::ApiError& e) {
    std::string what = e.what();
    if (what.rfind("options.", 0) == 0) what = what.substr(8);
    throw UsageError(what);
  }
  AnalyzeOptions o;
  o.base = base;
  o.tuned = tuned;
  service::apply_job_options(checked, o);
  o.backend = compute["backend"].cast<std::string>();
  if (!compute["devices"].is_none()) o.devices = compute["devices"].cast<std::vector<int>>();
  o.gpu_mem = compute["gpu_mem"].cast<uint64_t>();
  const py::object workers = compute["workers"];
  if (py::isinstance<py::str>(workers)) {
    if (workers.cast<std::string>() != "auto")
      throw UsageError("workers must be \"auto\" or a number from 1 to 256");
    o.workers = 0;  // as --workers auto: from the matrix sizes, the cores and the memory
  } else {
    o.workers = workers.cast<int>();
    if (o.workers < 1 || o.workers > 256)
      throw UsageError("workers must be \"auto\" or a number from 1 to 256, not " +
                       std::to_string(o.workers));
  }
  o.streams = compute["streams"].cast<int>();
  o.cache_dir = compute["cache"].cast<std::string>();
  o.cache_max =
      DecompositionCache::parse_size(compute["cache_max"].cast<std::string>(), "cache_max");
  o.resume = compute["resume"].cast<bool>();
  o.out_dir = compute["out"].cast<std::string>();
  if (o.backend != "auto" && find_backend(o.backend) == nullptr)
    throw UsageError("backend must be one of auto or a registered backend, not " + o.backend);
  return o;
}

// Runs `work` with `o` (an analysis, or a mitigation around one) on a thread of its own; the
// caller's thread waits, reporting progress and taking Ctrl-C, and rethrows what it threw.
void run_waiting(AnalyzeOptions& o, CancelToken& token, const py::object& on_progress,
                 const std::function<void(const AnalyzeOptions&)>& work) {
  QueueObserver observer;
  o.observer = &observer;
  o.cancel = &token;
  std::mutex mu;
  std::condition_variable cv;
  bool finished = false;
  std::exception_ptr error;
  std::thread worker([&] {
    try {
      work(o);
    } catch (...) {
      error = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mu);
    finished = true;
    cv.notify_all();
  });
  bool interrupted = false;
  std::unique_ptr<py::error_already_set> callback_error;
  for (bool done = false; !done;) {
    {
      py::gil_scoped_release release;
      std::unique_lock<std::mutex> lock(mu);
      cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return finished; });
      done = finished;
    }
    try {
      for (const ProgressEvent& e : observer.take())
        if (!on_progress.is_none() && !callback_error)
          on_progress(e.done, e.total, e.cost_done, e.cost_total, e.name);
    } catch (py::error_already_set& e) {  // the callback raised: stop, then raise it
      callback_error = std::make_unique<py::error_already_set>(std::move(e));
      token.stop_now();
    }
    if (!interrupted && PyErr_CheckSignals() != 0) {  // Ctrl-C: stop at the next sweep
      interrupted = true;
      PyErr_Clear();
      token.stop_now();
    }
  }
  worker.join();
  if (callback_error) throw std::move(*callback_error);
  if (interrupted) {
    PyErr_SetNone(PyExc_KeyboardInterrupt);
    throw py::error_already_set();
  }
  if (error) std::rethrow_exception(error);
}

PyResult py_analyze(const std::string& base, const std::vector<std::string>& tuned,
                    const py::dict& analysis, const py::dict& compute, const py::object& progress,
                    CancelToken* cancel) {
  PyResult r;
  r.options = make_options(base, tuned, analysis, compute);
  CancelToken own;
  run_waiting(r.options, cancel != nullptr ? *cancel : own, progress,
              [&r](const AnalyzeOptions& o) { r.result = analyze_only(o); });
  r.options.observer = nullptr, r.options.cancel = nullptr;
  return r;
}

// indim mitigate: the analysis' options as analyze() takes them, the mitigation's in
// `mitigation` (out, lambdas, controls, adapter_rank). Returns the analysis as a Result and the
// folders and mitigation.json written.
py::dict py_mitigate(const std::string& base, const std::string& tuned, const py::dict& analysis,
                     const py::dict& compute, const py::dict& mitigation,
                     const py::object& progress, CancelToken* cancel) {
  PyResult r;
  r.options = make_options(base, {tuned}, analysis, compute);
  MitigateOptions m;
  m.out_dir = mitigation["out"].cast<std::string>();
  m.lambdas = mitigation["lambdas"].cast<std::vector<double>>();
  m.controls = mitigation["controls"].cast<std::vector<std::string>>();
  m.adapter_rank = mitigation["adapter_rank"].cast<std::string>();
  MitigationResult done;
  CancelToken own;
  run_waiting(r.options, cancel != nullptr ? *cancel : own, progress, [&](const AnalyzeOptions& o) {
    m.analysis = o;
    done = mitigate(m);
  });
  r.options.observer = nullptr, r.options.cancel = nullptr;
  r.options.out_dir = m.out_dir;
  r.result = std::move(done.analysis);
  py::dict out;
  out["analysis"] = py::cast(std::move(r));
  out["variant_dirs"] = done.variant_dirs;
  out["mitigation_json"] = done.mitigation_json;
  return out;
}

py::dict pair_row(const MatchedPair& p) {
  py::dict d;
  d["base_name"] = p.base_name;
  d["tuned_name"] = p.tuned_name;
  d["base_dtype"] = dtype_name(p.base.info->dtype);
  d["tuned_dtype"] = dtype_name(p.tuned.info->dtype);
  d["shape"] = shape_text(p.base.info->shape);
  d["tuned_shape"] = shape_text(p.tuned.info->shape);
  d["shapes_equal"] = p.shapes_equal;
  d["selected"] = p.selected && p.shapes_equal;
  d["reason"] = p.reason;
  d["lora_r"] = p.lora != nullptr ? p.lora->r : 0;
  d["conv1d"] = p.conv1d;
  d["parts"] = static_cast<int>(p.parts.size());
  return d;
}

py::dict py_inspect(const std::string& base_arg, const std::string& tuned_arg,
                    const std::vector<std::string>& include,
                    const std::vector<std::string>& exclude, bool split_fused) {
  py::dict out;
  const InputPath bp = resolve_input(base_arg);
  const Checkpoint base = Checkpoint::open(bp.path);
  const ModelLayout layout = detect_layout(base);
  out["layout"] = layout.describe();
  py::list tensors;
  for (const auto& [name, ref] : base.tensors())
    tensors.append(py::dict(py::arg("name") = name, py::arg("dtype") = dtype_name(ref.info->dtype),
                            py::arg("shape") = shape_text(ref.info->shape)));
  out["tensors"] = tensors;
  if (tuned_arg.empty()) return out;
  const TunedInput tuned = TunedInput::open(resolve_input(tuned_arg).path);
  SelectOptions sel;
  sel.include = include, sel.exclude = exclude, sel.split_fused = split_fused;
  const MatchTable t = tuned.match(base, sel, layout);
  py::list rows;
  for (const auto& p : t.pairs) rows.append(pair_row(p));
  out["pairs"] = rows;
  out["base_only"] = t.base_only;
  out["tuned_only"] = t.tuned_only;
  out["adapter"] = tuned.is_adapter();
  return out;
}

// Runs without the GIL: plain C++ values only.
std::map<std::string, std::string> py_demo(const std::string& dir, int hidden, int intermediate,
                                           int kv_dim, int layers, int lora_rank,
                                           const std::string& dtype) {
  DemoOptions o;
  o.hidden = hidden, o.intermediate = intermediate, o.kv_dim = kv_dim, o.layers = layers;
  o.lora_rank = lora_rank;
  const std::optional<DType> d = parse_dtype(dtype);
  if (!d) throw UsageError("dtype must be BF16, F16 or F32, not " + dtype);
  o.dtype = *d;
  const DemoPaths p = generate_demo(dir, o);
  return {{"base", p.base}, {"full", p.full}, {"lora", p.lora}, {"lora_adapter", p.lora_adapter}};
}

void register_errors(py::module_& m) {
  static py::exception<Error> error(m, "Error");
  static py::exception<UsageError> usage(m, "UsageError", error.ptr());
  static py::exception<BadInput> bad(m, "BadInput", error.ptr());
  static py::exception<Cancelled> cancelled(m, "Cancelled", error.ptr());
  static py::exception<Error> runtime(m, "RuntimeFailure", error.ptr());
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const UsageError& e) {
      PyErr_SetString(usage.ptr(), e.what());
    } catch (const BadInput& e) {
      py::object exc = py::reinterpret_borrow<py::object>(bad.ptr())(e.what());
      exc.attr("problem") = input_problem_name(e.problem());
      PyErr_SetObject(bad.ptr(), exc.ptr());
    } catch (const Cancelled& e) {
      PyErr_SetString(cancelled.ptr(), e.what());
    } catch (const Error& e) {
      PyErr_SetString(runtime.ptr(), e.what());
    }
  });
}

}  // namespace

PYBIND11_MODULE(_indim, m) {
  m.doc() = "indim: intruder dimensions in fine-tuned checkpoints (the C++ library)";
  m.attr("__version__") = INDIM_VERSION;
  register_errors(m);
  py::class_<CancelToken>(m, "CancelToken",
                          "Stops a run: cancel() between units, stop_now() also inside one")
      .def(py::init<>())
      .def("cancel", &CancelToken::cancel)
      .def("stop_now", &CancelToken::stop_now)
      .def_property_readonly("cancelled", &CancelToken::cancelled);
  py::class_<PyResult>(m, "Result")
      .def_property_readonly("report_json", &PyResult::report_json)
      .def_property_readonly("matrices_csv",
                             [](const PyResult& r) { return detail::build_matrices_csv(r.result); })
      .def_property_readonly("vectors_csv",
                             [](const PyResult& r) {
                               return detail::build_vectors_csv(r.result, r.options.eps.front());
                             })
      .def_property_readonly("summary",
                             [](const PyResult& r) {
                               return format_summary(r.result, r.options.eps.front(), r.options.k);
                             })
      .def_property_readonly("seconds", [](const PyResult& r) { return r.result.seconds; })
      .def_property_readonly("resumed", [](const PyResult& r) { return r.result.resumed; })
      .def("html", &PyResult::html)
      .def("write", &PyResult::write, py::arg("out_dir"), py::arg("html"),
           py::call_guard<py::gil_scoped_release>());
  m.def("analyze", &py_analyze, py::arg("base"), py::arg("tuned"), py::arg("analysis"),
        py::arg("compute"), py::arg("progress"), py::arg("cancel"));
  m.def("mitigate", &py_mitigate, py::arg("base"), py::arg("tuned"), py::arg("analysis"),
        py::arg("compute"), py::arg("mitigation"), py::arg("progress"), py::arg("cancel"));
  m.def("inspect", &py_inspect, py::arg("base"), py::arg("tuned"), py::arg("include"),
        py::arg("exclude"), py::arg("split_fused"));
  m.def("generate_demo", &py_demo, py::arg("dir"), py::arg("hidden"), py::arg("intermediate"),
        py::arg("kv_dim"), py::arg("layers"), py::arg("lora_rank"), py::arg("dtype"),
        py::call_guard<py::gil_scoped_release>());
  m.def("default_cache_dir", &DecompositionCache::default_dir);
  m.def("backends", &backend_choices);
}
