/* Template: the int8 VNNI block kernel on 256-bit vectors, for a constant g in {4, 8, 16}.
 * Included by the files of the instruction sets that have a 256-bit dpbusd (AVX-512 VNNI with
 * AVX-512 VL, and AVX-VNNI), after defining
 *   TFS_VNNI256_TARGET   the target attribute,
 *   TFS_VNNI256_DP(a, u, w)  a + the dpbusd of uint8 u and int8 w (non-saturating),
 *   TFS_VNNI256_BLK      the name of the block function to define.
 *
 * vpdpbusd multiplies uint8 by int8 and adds each 4 products to an int32 lane (wrapping): the
 * kernels run on u = x + 128 as uint8 (the workspace; tfs_x86_to_u8) and start from the slot
 * biases P->bias_u8, which subtract (128 + input_zp) * the sum of the slot's weights. A step
 * (8 slots x g bytes) is g / 4 vectors, slot-major, g / 4 lanes per slot; 4 / (g / 4) sets of
 * accumulators take alternate steps, to hide dpbusd's latency in the short blocks of a sparse
 * layer.
 */
static inline __attribute__((always_inline)) TFS_VNNI256_TARGET __m256i TFS_VNNI256_BLK(
    const uint8_t* xu, const uint16_t* col, const int8_t* w, int32_t steps, const int g) {
  const int n_vec = g / 4, n_set = 4 / n_vec;
  __m256i a[4][4];
#define TFS_VNNI256_MAC(acc, t, v)                                                   \
  TFS_VNNI256_DP(acc, tfs_x86_u8_chunks(xu, col + 8 * (t), v, g),                    \
                 _mm256_loadu_si256((const __m256i*)(const void*)(w + 8 * g * (t) + 32 * (v))))
  TFS_X86_ACCUMULATE(a, n_set, n_vec, steps, _mm256_setzero_si256, _mm256_add_epi32, TFS_VNNI256_MAC);
#undef TFS_VNNI256_MAC
  return tfs_x86_reduce_epi32(a[0], n_vec);
}
