/* TFS_GROUP_SPARSE_FC: the AVX-VNNI int8 kernels (256-bit vpdpbusd, VEX-encoded: Alder Lake and
 * later, Sapphire Rapids, Zen 5), g = 4, 8, 16. The block kernel is the 256-bit VNNI template
 * (tfs_gsfc_x86_vnni256.h), shared with the AVX-512 VNNI file. */
#include "tfs_common.h"

#if TFS_X86
#include "tfs_gsfc_x86.h"

#define TFS_AVX_VNNI __attribute__((target("avxvnni,avx2,fma")))
#define TFS_VNNI256_TARGET TFS_AVX_VNNI
#define TFS_VNNI256_DP(a, u, w) _mm256_dpbusd_avx_epi32(a, u, w)
#define TFS_VNNI256_BLK blk_vnni
#include "tfs_gsfc_x86_vnni256.h"

TFS_X86_I8_KERNEL(tfs_gsfc_avx_vnni_i8_g4, TFS_AVX_VNNI, uint8_t, tfs_x86_to_u8, blk_vnni, P->bias_u8, 4)
TFS_X86_I8_KERNEL(tfs_gsfc_avx_vnni_i8_g8, TFS_AVX_VNNI, uint8_t, tfs_x86_to_u8, blk_vnni, P->bias_u8, 8)
TFS_X86_I8_KERNEL(tfs_gsfc_avx_vnni_i8_g16, TFS_AVX_VNNI, uint8_t, tfs_x86_to_u8, blk_vnni, P->bias_u8, 16)

#endif /* TFS_X86 */
