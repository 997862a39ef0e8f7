/* TFS_GROUP_SPARSE_FC: the AVX-VNNI int8 kernels (256-bit vpdpbusd, VEX-encoded: Alder Lake and
 * later, Sapphire Rapids, Zen 5), g = 4, 8, 16. The block kernel is the 256-bit VNNI template
 * (tfs_gsfc_x86_vnni256.h), shared with the AVX-512 VNNI file. */
#include "tfs_common.h"

#if TFS_X86
#include <cpuid.h>

#include "tfs_gsfc_x86.h"

/* The manifest's probe: CPUID.(EAX=7, ECX=1):EAX bit 4 (not every compiler's
 * __builtin_cpu_supports knows "avxvnni"). The OS's ymm state is covered by the parent (AVX2). */
int tfs_x86_has_avx_vnni(void) {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
  return (int)((a >> 4) & 1u);
}

#define TFS_AVX_VNNI __attribute__((target("avxvnni,avx2,fma")))
#define TFS_VNNI256_TARGET TFS_AVX_VNNI
#define TFS_VNNI256_DP(a, u, w) _mm256_dpbusd_avx_epi32(a, u, w)
#define TFS_VNNI256_BLK blk_vnni
#include "tfs_gsfc_x86_vnni256.h"

TFS_X86_I8_KERNEL(tfs_gsfc_avx_vnni_i8_g4, TFS_AVX_VNNI, uint8_t, tfs_x86_to_u8, blk_vnni, P->bias_u8, tfs_x86_finish_i8_x2, 4)
TFS_X86_I8_KERNEL(tfs_gsfc_avx_vnni_i8_g8, TFS_AVX_VNNI, uint8_t, tfs_x86_to_u8, blk_vnni, P->bias_u8, tfs_x86_finish_i8_x2, 8)
TFS_X86_I8_KERNEL(tfs_gsfc_avx_vnni_i8_g16, TFS_AVX_VNNI, uint8_t, tfs_x86_to_u8, blk_vnni, P->bias_u8, tfs_x86_finish_i8_x2, 16)

#else
int tfs_x86_has_avx_vnni(void) { return 0; }
#endif /* TFS_X86 */
