/* What the AArch64 NEON kernels of both custom ops share (tfs_gsfc_neon.c, tfs_nm_neon.c; not
 * public API). Only included on AArch64. */
#ifndef TFS_NEON_H_
#define TFS_NEON_H_

#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>

/* xs[i] = x[i] - zp as int16 (exact: |x - zp| <= 255), for the int8 kernels that multiply
 * int16 x int16 (SMLAL). */
static inline void tfs_neon_widen_i16(const int8_t* x, int16_t* xs, size_t n, int32_t zp) {
  const int16x8_t z = vdupq_n_s16((int16_t)zp);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const int8x16_t v = vld1q_s8(x + i);
    vst1q_s16(xs + i, vsubq_s16(vmovl_s8(vget_low_s8(v)), z));
    vst1q_s16(xs + i + 8, vsubq_s16(vmovl_high_s8(v), z));
  }
  for (; i < n; ++i) xs[i] = (int16_t)(x[i] - zp);
}

#endif /* TFS_NEON_H_ */
