/* im2col of an int8 or float32 NHWC feature map: the patches TFS_GROUP_SPARSE_CONV2D's FC core multiplies
 * (tfs_group_sparse_conv.h), also used by the Cortex-M4 benchmark firmware's dense conv path
 * (benchmarks/mcu/bench_main.c). Runtime-neutral C99, no allocation. */
#ifndef TFS_IM2COL_H_
#define TFS_IM2COL_H_
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One CONV_2D's geometry (one image, NHWC), as TFLite runs it. */
typedef struct {
  int32_t in_h, in_w, cin;   /* input feature map */
  int32_t out_h, out_w;      /* output positions: out_h * out_w, row-major */
  int32_t kh, kw;            /* filter size */
  int32_t stride_h, stride_w, dil_h, dil_w;
  int32_t pad_top, pad_left; /* TFLite's SAME padding (0 for VALID) */
  int32_t pad_value;         /* int8: what padding reads as, the input zero point, like TFLite;
                                float32 pads with 0.0f (pad_value unused) */
} tfs_conv_geom;

/* patches[i * K .. i * K + K - 1] = the input patch of output position pos0 + i (i < n),
 * K = kh*kw*cin, in [kh][kw][cin] order - the order of TFLite's filter [out, kh, kw, cin]
 * flattened, which is also the group order of tfscalpel's GroupPrunedConv2D
 * (tfscalpel/patterns.py). A conv is then an FC [n, K] x [out, K]^T. The geometry must be
 * consistent (tfs_gsconv_validate_layer checks a model's); x holds in_h * in_w * cin values. */
void tfs_im2col_s8(const tfs_conv_geom* G, const int8_t* x, int32_t pos0, int32_t n,
                   int8_t* patches);

/* The same for elements of elem_size bytes (1: int8, 4: float32; one implementation, the
 * patches are byte copies): x holds in_h * in_w * cin elements, patches n * K of them. */
void tfs_im2col(const tfs_conv_geom* G, const void* x, int32_t pos0, int32_t n, void* patches,
                int32_t elem_size);

#ifdef __cplusplus
}
#endif

#endif /* TFS_IM2COL_H_ */
