// The CPU kernels. Included inside namespace lossdiag::isa_<name> by isa_*.cpp, once per
// instruction set, after the system headers and simd_math.h. Everything here therefore has a
// distinct mangled name per ISA, so the linker cannot mix AVX-512 code into the baseline build.
//
// Layout model: logits are (N, C, inner) ("NCHW", class stride = inner, pixels contiguous) or
// (E, C) rows ("NC" and channels-last). Work is cut into *tiles* whose boundaries depend only on
// the shape, tiles are grouped into a fixed number of *slabs*, each slab is summed sequentially by
// one thread and slabs are combined in order: the result is bitwise identical for any thread count.
// Inside a tile, B consecutive elements form a block processed lane-wise (one SIMD lane per pixel
// or row), so each element's C logits are read once from memory and re-read from L1.
//
// The kernels are split into the files below, by concern, included here in this order (each
// relies on the ones before it). CE, the multi-class kernel, is one struct template: kernels/ce.h
// declares it, and the files after it define its member functions.
#include "kernels/types.h"       // helpers, bf16, compute type, lanes, loading labels and targets
#include "kernels/tiling.h"      // tiles, slabs (deterministic sums), checked scratch, accumulators
#include "kernels/ce.h"          // CE: the struct (types, state, constants, member declarations)
#include "kernels/ce_passes.h"   // CE: labels into lanes, pass 1 (max, argmax), pass 2 (exp sums)
#include "kernels/ce_finish.h"   // CE: per-element loss, lane gradient, top-k counting of a block
#include "kernels/ce_wide.h"     // CE: the wide-row path for large C (rows, gradient, block)
#include "kernels/ce_stats.h"    // CE: statistics (histograms, confusion, per-class sums), flush
#include "kernels/ce_layout.h"   // CE: NCHW and rows layouts, transposition, one segment
#include "kernels/ce_run.h"      // CE: thread scratch, parallel loop over slabs, ordered combine
#include "kernels/ce_prob.h"     // CEProb: cross-entropy of probabilities (from_logits=False)
#include "kernels/ce_entry.h"    // ce_entry: dtypes and options to a CE / CEProb instantiation
#include "kernels/bce.h"         // BCE: binary cross-entropy, its statistics, bce_entry
#include "kernels/labels.h"      // labels_entry: the label pre-pass (the "mean" normaliser)
#include "kernels/surface.h"     // surface_entry: logistic-regression loss surface
#include "kernels/membench.h"    // mem_read_entry, mem_copy_entry: memory-speed references

// The entry points of this instruction set, handed to dispatch.cpp.
KernelTable table() {
  KernelTable t;
  t.name = LD_ISA_NAME;
  t.ce = ce_entry; t.bce = bce_entry; t.labels = labels_entry; t.surface = surface_entry;
  t.mem_read = mem_read_entry; t.mem_copy = mem_copy_entry;
  return t;
}
