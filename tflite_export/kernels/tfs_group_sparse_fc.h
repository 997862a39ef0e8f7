/* TFS_GROUP_SPARSE_FC: the group-sparse fully-connected kernel core (format version 2).
 *
 * Runtime-neutral C99: no LiteRT / TFLite types and no allocation in the compute path, so the
 * same core serves the LiteRT adapter (tfs_litert_adapter.c), a TFLite Micro adapter and a
 * Cortex-M DSP path. The format is specified in tflite_export/FORMAT.md.
 *
 * Use:
 *   tfs_gsfc_layer layer;
 *   if (tfs_gsfc_validate_layer(inputs, n_inputs, &layer, err, sizeof err) != 0) reject;
 *   // once per run (O(1)):
 *   if (tfs_gsfc_validate_io(&layer, &x, &y, &batch, err, sizeof err) != 0) reject;
 *   // once per node, for the SIMD paths: tfs_gsfc_pack(&layer, mem, tfs_gsfc_packed_bound(&layer), &packed)
 *   tfs_gsfc_compute(&layer, &packed, x.data, y.data, batch, workspace, TFS_IMPL_AUTO);
 * with a workspace of tfs_gsfc_workspace_size(&layer, batch) bytes (64-byte aligned is best).
 */
#ifndef TFS_GROUP_SPARSE_FC_H_
#define TFS_GROUP_SPARSE_FC_H_

#include <stddef.h>
#include <stdint.h>

#include "tfs_common.h" /* tfs_tensor, TFS_ELEM_*, TFS_DTYPE_*, TFS_IMPL_*, errors, blob */

#ifdef __cplusplus
extern "C" {
#endif

/* Version 2: col_idx holds the group index (column / g) as uint8 or uint16 (version 1: the
 * first column, uint16 only). */
#define TFS_GSFC_FORMAT_VERSION 2
#define TFS_GSFC_META_LEN TFS_META_LEN

/* In a model the node has two inputs: the activations and one constant uint8 tensor, the
 * parameter blob, which carries the constant arrays below as aligned sections (FORMAT.md
 * "Parameter blob"). One constant input instead of eight matters: LiteRT wraps every node input
 * in a fresh tensor buffer on every run (~0.3 us each). */
#define TFS_GSFC_NODE_INPUTS 2

/* Array indices (FORMAT.md "Arrays"): blob section i is array i; 0 stands for the activations. */
enum {
  TFS_GSFC_IN_X = 0,
  TFS_GSFC_IN_VALUES = 1,
  TFS_GSFC_IN_COL_IDX = 2,
  TFS_GSFC_IN_ROW_PTR = 3,
  TFS_GSFC_IN_META = 4,
  TFS_GSFC_IN_BIAS = 5,
  TFS_GSFC_IN_MULTIPLIER = 6,
  TFS_GSFC_IN_SHIFT = 7,
  TFS_GSFC_IN_SCALE = 8,
  TFS_GSFC_NUM_INPUTS_F32 = 6,
  TFS_GSFC_NUM_INPUTS_I8 = 9
};

/* meta[] indices of this op (the shared ones, TFS_META_VERSION and 5.., are in tfs_common.h). */
enum { TFS_META_IN = 1, TFS_META_OUT = 2, TFS_META_G = 3, TFS_META_N_GROUPS = 4 };

/* One validated node: meta fields plus typed pointers into the constant tensors. */
typedef struct {
  int32_t in, out, g, n_groups, dtype, activation;
  int32_t in_zp, out_zp, act_min, act_max;
  int32_t in_full;  /* in rounded down to a multiple of g: a group at col >= in_full is ragged */
  int32_t requant;  /* TFS_REQUANT_*; validate sets FP32, an adapter may change it */
  const void* values;          /* float or int8, n_groups * g */
  const void* col_idx;         /* n_groups group indices (column / g), uint8 or uint16: */
  int32_t col_bytes;           /*   1 (uint8) or 2 (uint16) bytes per index */
  const int32_t* row_ptr;      /* out + 1 */
  const void* bias;            /* float or int32, out */
  const int32_t* multiplier;   /* int8 only, out */
  const int32_t* shift;        /* int8 only, out */
  const float* scale;          /* int8 only, out */
} tfs_gsfc_layer;

/* First input column of stored group k of a validated layer (group index * g). */
static inline int32_t tfs_gsfc_col(const tfs_gsfc_layer* layer, int32_t k) {
  const int32_t gi = layer->col_bytes == 1 ? ((const uint8_t*)layer->col_idx)[k]
                                           : ((const uint16_t*)layer->col_idx)[k];
  return gi * layer->g;
}

/* The SIMD paths' packed copy of a layer (made once per node by tfs_gsfc_pack into memory the
 * caller owns; it points into that memory). Rows sorted by length and interleaved in blocks of
 * TFS_GSFC_BLOCK_ROWS: see tfs_gsfc_pack.c. */
#define TFS_GSFC_BLOCK_ROWS 8
typedef struct {
  int32_t n_blocks;
  const int32_t* perm;    /* [n_blocks * 8] original row of each slot, -1 for padding slots */
  const int32_t* tail;    /* [n_blocks * 8] index of the slot's ragged tail group, or -1 */
  const void* bias;       /* [n_blocks * 8] each slot's bias (float or int32; 0 for padding) */
  const float* scale;     /* [n_blocks * 8] each slot's out_scale (int8 only; else 0) */
  const int32_t* bias_u8; /* [n_blocks * 8] int8: bias - (128 + input_zp) * sum of the slot's
                             full-group weights (mod 2^32), for kernels on x + 128 as uint8 */
  const int32_t* bias_s8; /* [n_blocks * 8] int8: bias - input_zp * sum of the slot's full-group
                             weights (mod 2^32), for kernels on the raw int8 x (NEON SDOT) */
  const int64_t* blk_off; /* [n_blocks + 1] first entry of each block (entries = steps * 8) */
  const uint16_t* col;    /* [entries] first input column of each entry (not the group index) */
  const void* w;          /* [entries * g] float or int8 weights (zeros for padding) */
  const uint32_t* xoff;   /* [entries] AArch64 float32 only (else NULL): 4 * col, the byte offset
                             of the entry's x, which the NEON kernel adds in its load */
} tfs_gsfc_packed;

/* tfs_gsfc_unpack_params, _validate_layer (O(n_groups + out)), _validate_io, _workspace_size
 * (int8: x - input_zp as int16, plus a gather's slack; 0 for float32), _layer_size, _set_requant:
 * tfs_common.h TFS_DECLARE_OP_CORE. */
TFS_DECLARE_OP_CORE(tfs_gsfc, tfs_gsfc_layer);

/* Bytes tfs_gsfc_pack needs for a validated layer (an upper bound). */
size_t tfs_gsfc_packed_bound(const tfs_gsfc_layer* layer);

/* Build the packed copy in mem (64-byte aligned, >= tfs_gsfc_packed_bound bytes). O(groups). */
int tfs_gsfc_pack(const tfs_gsfc_layer* layer, void* mem, size_t bytes, tfs_gsfc_packed* packed);

/* y[batch, out] = act(x[batch, in] * W^T + bias), W the group-sparse weights. The layer must
 * have been validated and x/y checked with tfs_gsfc_validate_io. The kernel comes from the
 * manifest (tfs_kernels.inc, chosen in tfs_dispatch.c): `impl`'s kernel for the layer's (dtype,
 * g), or its parent's; TFS_IMPL_AUTO starts from the best instruction set the CPU has. `packed`
 * (from tfs_gsfc_pack) is required by the x86 and NEON SIMD kernels; with NULL, TFS_IMPL_AUTO only
 * considers kernels that run on the model's layout (portable, or the DSP kernel for int8 on an
 * Arm core with the DSP extension). Returns TFS_ERR_UNSUPPORTED if `impl` is not available on
 * this CPU (or switched off: tfs_impl_disable), TFS_ERR_INVALID if its kernel needs `packed` and
 * it is NULL. No allocation, no I/O. */
int tfs_gsfc_compute(const tfs_gsfc_layer* layer, const tfs_gsfc_packed* packed, const void* x,
                     void* y, int32_t batch, void* workspace, int impl);

/* 1 if `impl` can run on this CPU: TFS_IMPL_AUTO always; PORTABLE always; ARM_DSP (emulated off
 * Arm) unless switched off; the x86 ones if the CPU has their features (tfs_dispatch.h). */
int tfs_gsfc_impl_available(int impl);

/* The implementation TFS_IMPL_AUTO starts from on this CPU. */
int tfs_gsfc_best_impl(void);

/* From this many rows tfs_gsfc_compute runs a layer with the manifest's SpMM kernel (GSMM lines)
 * where one is listed for its (dtype, g) and implementation. */
int tfs_gsfc_batched_min_rows(void);

#ifdef __cplusplus
}
#endif

#endif /* TFS_GROUP_SPARSE_FC_H_ */
