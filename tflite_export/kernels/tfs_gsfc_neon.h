/* TFS_GROUP_SPARSE_FC on Arm Cortex-A (AArch64 Advanced SIMD, "NEON").
 *
 * The kernels run directly on a validated tfs_gsfc_layer (the format's group-CSR, FORMAT.md
 * version 2: uint8 or uint16 group indices, ragged tail groups, empty rows); they need no packed
 * copy. One exported function per (dtype, g, instruction set), so each is one kernel-manifest
 * line:
 *
 *   float32, FMLA:           tfs_gsfc_neon_f32_g4 / _g8 / _g16     (any AArch64 core)
 *   int8, SMLAL (ARMv8.0-A): tfs_gsfc_neon_i8_g4 / _g8 / _g16      (any AArch64 core)
 *   int8, SDOT (ARMv8.2-A):  tfs_gsfc_neon_i8_dot_g4 / _g8 / _g16  (tfs_gsfc_neon_has_dotprod())
 *
 * Each returns TFS_OK, or TFS_ERR_INVALID (computing nothing) if layer->g is not its g (the
 * caller dispatches on g). float32 mirrors the
 * portable kernel: y[batch, out] from x[batch, in], bit-for-bit the same terms, summed in another
 * order (within 1e-5 of the sum of |terms|). The int8 kernels take the raw int8 activations and
 * a workspace of tfs_gsfc_workspace_size(layer, batch) bytes, like tfs_gsfc_compute: the SMLAL
 * kernels widen x - input_zp to int16 there (as the portable kernel does); the SDOT kernels
 * multiply int8 x int8 and subtract input_zp * (sum of the row's weights) instead, because
 * x - input_zp does not fit in int8 (they do not use the workspace). Both are bit-exact with the
 * portable kernel: the same integer sum modulo 2^32 and the same requantization
 * (tfs_requant_i8, the layer's flavour).
 *
 * Everything here exists only when compiling for AArch64; elsewhere the header declares
 * nothing and tfs_gsfc_neon.c compiles to an empty object.
 */
#ifndef TFS_GSFC_NEON_H_
#define TFS_GSFC_NEON_H_

#include <stdint.h>

#include "tfs_group_sparse_fc.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__aarch64__)

/* 1 if the core has the dot-product extension (Linux: HWCAP_ASIMDDP in AT_HWCAP; elsewhere:
 * whether this file was compiled for such a core). Advanced SIMD itself is mandatory in
 * AArch64, so the FMLA and SMLAL kernels need no probe. */
int tfs_gsfc_neon_has_dotprod(void);

int tfs_gsfc_neon_f32_g4(const tfs_gsfc_layer* layer, const float* x, float* y, int32_t batch);
int tfs_gsfc_neon_f32_g8(const tfs_gsfc_layer* layer, const float* x, float* y, int32_t batch);
int tfs_gsfc_neon_f32_g16(const tfs_gsfc_layer* layer, const float* x, float* y, int32_t batch);

int tfs_gsfc_neon_i8_g4(const tfs_gsfc_layer* layer, const int8_t* x, int8_t* y, int32_t batch,
                        void* workspace);
int tfs_gsfc_neon_i8_g8(const tfs_gsfc_layer* layer, const int8_t* x, int8_t* y, int32_t batch,
                        void* workspace);
int tfs_gsfc_neon_i8_g16(const tfs_gsfc_layer* layer, const int8_t* x, int8_t* y, int32_t batch,
                         void* workspace);

int tfs_gsfc_neon_i8_dot_g4(const tfs_gsfc_layer* layer, const int8_t* x, int8_t* y,
                             int32_t batch, void* workspace);
int tfs_gsfc_neon_i8_dot_g8(const tfs_gsfc_layer* layer, const int8_t* x, int8_t* y,
                             int32_t batch, void* workspace);
int tfs_gsfc_neon_i8_dot_g16(const tfs_gsfc_layer* layer, const int8_t* x, int8_t* y,
                              int32_t batch, void* workspace);

#endif /* __aarch64__ */

#ifdef __cplusplus
}
#endif

#endif /* TFS_GSFC_NEON_H_ */
