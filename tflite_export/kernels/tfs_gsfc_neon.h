/* TFS_GROUP_SPARSE_FC on Arm Cortex-A (AArch64 Advanced SIMD, "NEON").
 *
 * The kernels run directly on a validated tfs_gsfc_layer (the format's group-CSR, FORMAT.md
 * version 2: uint8 or uint16 group indices, ragged tail groups, empty rows); they need no packed
 * copy. One exported function per (dtype, g, instruction set), so each is one kernel-manifest
 * line:
 *
 *   float32, FMLA:           tfs_gsfc_neon_f32_g4 / _g8 / _g16     (any AArch64 core)
 *   int8, SMLAL (ARMv8.0-A): tfs_gsfc_neon_i8_g4 / _g8 / _g16      (any AArch64 core)
 *   int8, SDOT (ARMv8.2-A):  tfs_gsfc_neon_i8_dot_g4 / _g8 / _g16  (tfs_arm_has_dotprod())
 *
 * float32 mirrors the portable kernel: y[batch, out] from x[batch, in], the same terms summed in
 * another order (within 1e-5 of the sum of |terms|). The int8 kernels take the raw int8
 * activations and the op's workspace, like the portable kernel: the SMLAL
 * kernels widen x - input_zp to int16 there (as the portable kernel does); the SDOT kernels
 * multiply int8 x int8 and subtract input_zp * (sum of the row's weights) instead, because
 * x - input_zp does not fit in int8 (they do not use the workspace). Both are bit-exact with the
 * portable kernel: the same integer sum modulo 2^32 and the same requantization
 * (tfs_requant_i8, the layer's flavour).
 *
 * The kernels exist only when compiling for AArch64 (elsewhere the file compiles to the two
 * probes, returning 0).
 */
#ifndef TFS_GSFC_NEON_H_
#define TFS_GSFC_NEON_H_

#include <stdint.h>

#include "tfs_group_sparse_fc.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Probes (tfs_kernels.inc TFS_PROBE), defined on every architecture: 1 on AArch64 (Advanced SIMD
 * is mandatory there), 0 elsewhere; 1 if the core also has the dot-product extension (Linux:
 * HWCAP_ASIMDDP in AT_HWCAP; elsewhere: whether this file was compiled for such a core). */
int tfs_arm_has_neon(void);
int tfs_arm_has_dotprod(void);

#if defined(__aarch64__)

/* The kernels, with the manifest's common signature (tfs_kernel_fn in tfs_dispatch.h): `layer` is
 * a validated tfs_gsfc_layer of that g, `packed` is not used (they run on the model's layout),
 * `ws` is tfs_gsfc_workspace_size(layer, batch) bytes (the SDOT kernels do not use it). */
#define TFS_GSFC_NEON_KERNEL(name) \
  void name(const void* layer, const void* packed, const void* x, void* y, int32_t batch, void* ws)
TFS_GSFC_NEON_KERNEL(tfs_gsfc_neon_f32_g4);
TFS_GSFC_NEON_KERNEL(tfs_gsfc_neon_f32_g8);
TFS_GSFC_NEON_KERNEL(tfs_gsfc_neon_f32_g16);
TFS_GSFC_NEON_KERNEL(tfs_gsfc_neon_i8_g4);
TFS_GSFC_NEON_KERNEL(tfs_gsfc_neon_i8_g8);
TFS_GSFC_NEON_KERNEL(tfs_gsfc_neon_i8_g16);
TFS_GSFC_NEON_KERNEL(tfs_gsfc_neon_i8_dot_g4);
TFS_GSFC_NEON_KERNEL(tfs_gsfc_neon_i8_dot_g8);
TFS_GSFC_NEON_KERNEL(tfs_gsfc_neon_i8_dot_g16);
#undef TFS_GSFC_NEON_KERNEL

#endif /* __aarch64__ */

#ifdef __cplusplus
}
#endif

#endif /* TFS_GSFC_NEON_H_ */
