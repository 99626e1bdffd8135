// The plan as data: every unit of work of a run (one tuned checkpoint against one base matrix
// or part of one), with how each side reaches the backend (the exact bytes it reads) and its
// cost, decided once. Staging, decomposition, scheduling and progress all read it.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "indim/analyze.hpp"
#include "indim/match.hpp"
#include "indim/quant.hpp"

namespace indim::detail {

/// How one side of a unit is handed to the backend.
struct SideRead {
  enum class Kind {
    Stored,  ///< contiguous stored bytes, as they lie (the GPU converts them on the device)
    Merged,  ///< the base's stored bytes merged with the pair's LoRA update by the backend
    Host,    ///< loaded and reshaped on the host (rows of a Conv1D, scattered rows, LoRA parts)
  };
  Kind kind = Kind::Host;
  const uint8_t* data = nullptr;  ///< Stored, Merged: the first byte the backend reads
  size_t bytes = 0;               ///< Stored, Merged: how many
  int64_t rows = 0, cols = 0;     ///< Stored, Merged: the block as stored, row-major
  bool transposed = false;        ///< Stored: analysed as [cols, rows] (a Conv1D)
  DType dtype = DType::F32;       ///< Stored: the codes' dtype (F4 for MXFP4)
  QuantScales scales;             ///< Stored, quantised: the block's scales, decoded with it
  bool on_backend() const { return kind != Kind::Host; }
};

struct WorkUnit {
  int tuned_index = 0;
  MatchedPair pair;
  MatrixPart part;
  std::string name;            ///< the base name, with "[part]" for a part
  int64_t rows = 0, cols = 0;  ///< the matrix as analysed, [out, in]
  SideRead base, tuned;
  UnitCost cost;
  bool pending = true;  ///< false once its records were resumed from the journal
};

/// A base matrix (or part) and every fine-tune's unit against it: the base is decomposed once.
struct PlanEntry {
  std::string name;
  std::vector<WorkUnit> units;
  /// The stored bytes the backend reads for the pending units, each range once: what a backend
  /// that stages inputs copies ahead.
  std::vector<ByteRange> backend_inputs() const;
  /// The base's stored bytes, when the backend reads them for the base's decomposition only
  /// (no unit merges its tuned side from them): the range a cache holding the base spares.
  std::optional<ByteRange> base_only_input() const;
  UnitCost cost() const;
};

struct Plan {
  std::vector<PlanEntry> entries;  ///< base storage order: file, then offset; parts in order
  size_t units() const;
  UnitCost cost() const;
};

/// The plan of the selected pairs of every table, entries in the base's storage order so reads
/// stream through each file once. Units are priced by the route they will take: `lowrank`
/// (AnalyzeOptions::lowrank) prices LoRA units within the break-even at the low-rank route's.
Plan make_plan(const Checkpoint& base, const std::vector<MatchTable>& tables, bool lowrank);

/// The expert a unit's matrix is: its 3-D stack's slice, or the index in its `experts.N.`
/// name; -1 for any other matrix.
int expert_of(const WorkUnit& u);

/// The key of a unit's base decomposition in the cache: its bytes and everything that shapes
/// the decomposition (dtype, shape, side, backend and algorithm, precision, layout, part).
std::string base_cache_key(const WorkUnit& u, Side side, const std::string& backend_algo,
                           Precision precision);

}  // namespace indim::detail
