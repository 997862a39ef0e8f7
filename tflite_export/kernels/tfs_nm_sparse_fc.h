/* TFS_NM_SPARSE_FC: the 2:4 structured-sparse fully-connected kernel core (format version 1).
 *
 * The weights are stored in the compressed layout sparse tensor cores consume: per output row,
 * the 2 kept values of every window of 4 inputs, and their 2-bit positions packed 4 bits per
 * window (tflite_export/FORMAT.md, "TFS_NM_SPARSE_FC"). Runtime-neutral C99 like the group-sparse
 * core, sharing tfs_common.h (tfs_tensor, TFS_ELEM_*, TFS_IMPL_*, TFS_REQUANT_*, errors, checks).
 *
 * Use:
 *   tfs_nmfc_layer layer;
 *   tfs_nmfc_unpack_params(blob, blob_bytes, inputs, &n_inputs, err, sizeof err);  // from a model
 *   if (tfs_nmfc_validate_layer(inputs, n_inputs, &layer, err, sizeof err) != 0) reject;
 *   if (tfs_nmfc_validate_io(&layer, &x, &y, &batch, err, sizeof err) != 0) reject;  // per run
 *   tfs_nmfc_compute(&layer, x.data, y.data, batch, workspace, TFS_IMPL_AUTO);
 * with a workspace of tfs_nmfc_workspace_size(&layer, batch) bytes. No packing step: the SIMD
 * paths read the stored layout directly.
 */
#ifndef TFS_NM_SPARSE_FC_H_
#define TFS_NM_SPARSE_FC_H_

#include <stddef.h>
#include <stdint.h>

#include "tfs_group_sparse_fc.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TFS_NMFC_FORMAT_VERSION 1
#define TFS_NMFC_META_LEN TFS_META_LEN
/* Largest `in` and `out` accepted (keeps every index computation far from overflow). */
#define TFS_NMFC_MAX_DIM (1 << 24)

/* In a model the node has two inputs, like TFS_GROUP_SPARSE_FC: the activations and one
 * constant uint8 [out, row_bytes] parameter blob whose sections are arrays 1.. below (FORMAT.md
 * "Parameter blob"; LiteRT wraps every node input in a fresh buffer per run, ~0.3 us each). */
#define TFS_NMFC_NODE_INPUTS 2

/* Array indices (FORMAT.md): blob section i is array i; 0 stands for the activations. */
enum {
  TFS_NMFC_IN_X = 0,
  TFS_NMFC_IN_VALUES = 1,
  TFS_NMFC_IN_INDICES = 2,
  TFS_NMFC_IN_META = 3,
  TFS_NMFC_IN_BIAS = 4,
  TFS_NMFC_IN_MULTIPLIER = 5,
  TFS_NMFC_IN_SHIFT = 6,
  TFS_NMFC_IN_SCALE = 7,
  TFS_NMFC_NUM_INPUTS_F32 = 5,
  TFS_NMFC_NUM_INPUTS_I8 = 8
};

/* meta[] indices. */
enum {
  TFS_NMFC_META_VERSION = 0,
  TFS_NMFC_META_IN = 1,
  TFS_NMFC_META_OUT = 2,
  TFS_NMFC_META_N = 3,
  TFS_NMFC_META_M = 4
}; /* 5.. (dtype, activation, zero points, range, reserved) are TFS_META_* (tfs_common.h) */

/* One validated node. */
typedef struct {
  int32_t in, out, n, m, dtype, activation;
  int32_t in_zp, out_zp, act_min, act_max;
  int32_t requant;        /* TFS_REQUANT_*; validate sets FP32 (the host runtime's), see FORMAT.md */
  int32_t kept_per_row;   /* in / 2 */
  int32_t idx_stride;     /* bytes of positions per row: ceil(in / 8) */
  const void* values;     /* float or int8, [out, in / 2] */
  const uint8_t* indices; /* [out, idx_stride] */
  const void* bias;       /* float or int32, [out] */
  const int32_t* multiplier;
  const int32_t* shift;
  const float* scale;
} tfs_nmfc_layer;

/* tfs_nmfc_unpack_params, _validate_layer (every position included, O(out * in / 8)),
 * _validate_io, _workspace_size (int8: x - input_zp as int32; 0 for float32), _layer_size,
 * _set_requant: tfs_common.h TFS_DECLARE_OP_CORE. */
TFS_DECLARE_OP_CORE(tfs_nmfc, tfs_nmfc_layer);

/* y[batch, out] = act(x[batch, in] * W^T + bias) on a validated layer and checked x / y, by the
 * manifest's kernel for `impl` (or its parent's; tfs_kernels.inc). TFS_ERR_UNSUPPORTED if `impl`
 * is not available on this CPU. Defined in tfs_dispatch.c. No allocation, no I/O. */
int tfs_nmfc_compute(const tfs_nmfc_layer* layer, const void* x, void* y, int32_t batch,
                     void* workspace, int impl);

/* Seconds per tfs_nmfc_compute, averaged over `iterations` (timed in C); < 0 on error. Host
 * only: defined with the LiteRT adapter (tfs_nm_litert_adapter.c), next to the clock. */
double tfs_nmfc_time_compute(const tfs_nmfc_layer* layer, const void* x, void* y, int32_t batch,
                             void* workspace, int impl, int iterations);

#ifdef __cplusplus
}
#endif

#endif /* TFS_NM_SPARSE_FC_H_ */
