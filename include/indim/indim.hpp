// indim: find intruder dimensions in fine-tuned checkpoints. The library's one include.
#pragma once

#include "indim/analyze.hpp"
#include "indim/backend.hpp"
#include "indim/cache.hpp"
#include "indim/checkpoint.hpp"
#include "indim/dtype.hpp"
#include "indim/error.hpp"
#include "indim/hub.hpp"
#include "indim/layout.hpp"
#include "indim/match.hpp"
#include "indim/mitigate.hpp"
#include "indim/peft.hpp"
#include "indim/quant.hpp"
#include "indim/report.hpp"
#include "indim/safetensors.hpp"
#include "indim/shards.hpp"
#include "indim/tuned.hpp"
