#ifndef TFS_BENCH_IM2COL_H_
#define TFS_BENCH_IM2COL_H_
#include <stdint.h>

/* One int8 CONV_2D's geometry (batch 1, NHWC), as TFLite runs it. */
typedef struct {
  int32_t in_h, in_w, cin;   /* input feature map */
  int32_t out_h, out_w;      /* output positions: out_h * out_w, row-major */
  int32_t kh, kw;            /* filter size */
  int32_t stride_h, stride_w, dil_h, dil_w;
  int32_t pad_top, pad_left; /* TFLite's SAME padding (0 for VALID) */
  int32_t pad_value;         /* what padding reads as: the input zero point, like TFLite */
} conv_geom;

/* The benchmark's only im2col, used by both the dense and the group-sparse conv path:
 * patches[i * K .. i * K + K - 1] = the input patch of output position pos0 + i, K = kh*kw*cin,
 * in [kh][kw][cin] order - the order of TFLite's filter [out, kh, kw, cin] flattened, which is
 * also the group order of tfscalpel's GroupPrunedConv2D (tfscalpel/patterns.py). A conv is then
 * an FC [n, K] x [out, K]^T. */
void im2col_s8(const conv_geom* G, const int8_t* x, int32_t pos0, int32_t n, int8_t* patches);

#endif
