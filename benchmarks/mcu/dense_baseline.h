#ifndef TFS_BENCH_DENSE_BASELINE_H_
#define TFS_BENCH_DENSE_BASELINE_H_
#include <stdint.h>

typedef struct {
  int32_t in, out, in_zp, out_zp, act_min, act_max;
  const int8_t* weights; /* [out, in], TFLite's layout */
  const int32_t* bias;
  const int32_t* multiplier;
  const int32_t* shift;
} dense_fc;

/* y[out] = requant(W x + bias), batch 1. */
void dense_fc_s8(const dense_fc* L, const int8_t* x, int8_t* y);

#endif
