/* What every tfscalpel custom-op kernel core shares (TFS_GROUP_SPARSE_FC, TFS_NM_SPARSE_FC):
 * element / dtype / activation / requantization / implementation codes, the runtime-neutral
 * tensor view, error formatting, the common validation rules (FORMAT.md "Validation"), the
 * parameter-blob unpacker (FORMAT.md "Parameter blob") and int8 requantization.
 *
 * Runtime-neutral C99 like the cores: no allocation, no I/O beyond formatting an error string,
 * so it builds for LiteRT, TFLite Micro and bare-metal Cortex-M alike.
 */
#ifndef TFS_COMMON_H_
#define TFS_COMMON_H_

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Element types, numbered as TfLiteType / LiteRtElementType so adapters map them 1:1. */
enum {
  TFS_ELEM_FLOAT32 = 1,
  TFS_ELEM_INT32 = 2,
  TFS_ELEM_UINT8 = 3,
  TFS_ELEM_INT8 = 9,
  TFS_ELEM_UINT16 = 17
};

enum { TFS_DTYPE_F32 = 0, TFS_DTYPE_I8 = 1 };
enum { TFS_ACT_NONE = 0, TFS_ACT_RELU = 1, TFS_ACT_RELU6 = 3 };

/* int8 requantization flavours. The host runtime's stock int8 FULLY_CONNECTED is XNNPACK's,
 * which requantizes in float32 (measured bit-exact); TFLite Micro / TFLite's reference kernels
 * use the fixed-point multiplier and shift. The model carries both (FORMAT.md). */
enum { TFS_REQUANT_FP32 = 0, TFS_REQUANT_FIXED_POINT = 1 };

/* Where the kernels can run: TFS_X86 on x86 (its SIMD files compile to nothing elsewhere);
 * TFS_ARM_DSP_NATIVE on an Arm core with the DSP extension (SMLAD, SXTB16). */
#if defined(__x86_64__) || defined(__i386__)
#define TFS_X86 1
#else
#define TFS_X86 0
#endif
/* TFS_GSCONV_DIRECT: the float32 direct conv path (tfs_gsconv_direct.c) is built, except on a
 * Cortex-M (M profile: TFLite Micro runs the conv op's im2col path, and the firmware keeps no
 * code it never runs). */
#if defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M'
#define TFS_GSCONV_DIRECT 0
#else
#define TFS_GSCONV_DIRECT 1
#endif
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define TFS_ARM_DSP_NATIVE 1
#else
#define TFS_ARM_DSP_NATIVE 0
#endif

/* Compute implementations (instruction sets), numbered by the kernel manifest
 * (tfs_kernels.inc): TFS_IMPL_PORTABLE, _AVX2, _AVX512, _ARM_DSP, _AVX512_VNNI, _AVX_VNNI, ...
 * TFS_IMPL_AUTO picks the best the CPU supports, per layer. Codes are below TFS_IMPL_LIMIT. */
enum {
  TFS_IMPL_AUTO = 0,
#define TFS_ISA(NAME, code, ...) TFS_IMPL_##NAME = code,
#include "tfs_kernels.inc"
#undef TFS_ISA
  TFS_IMPL_LIMIT = 16
};

/* Error codes (0 = ok). */
enum { TFS_OK = 0, TFS_ERR_INVALID = 1, TFS_ERR_UNSUPPORTED = 2 };

/* A view of one tensor as a runtime hands it over: data, element count, element type. */
typedef struct {
  const void* data;
  size_t count; /* elements */
  int elem;     /* TFS_ELEM_* */
} tfs_tensor;

/* meta[] fields both ops share, at the same indices (FORMAT.md); meta has TFS_META_LEN int32s. */
#define TFS_META_LEN 16
enum {
  TFS_META_VERSION = 0,
  TFS_META_DTYPE = 5,
  TFS_META_ACTIVATION = 6,
  TFS_META_IN_ZP = 7,
  TFS_META_OUT_ZP = 8,
  TFS_META_ACT_MIN = 9,
  TFS_META_ACT_MAX = 10,
  TFS_META_RESERVED0 = 11
};

#if defined(__GNUC__)
#define TFS_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TFS_PRINTF(f, a)
#endif

/* Formats a message into err (if any room) and returns TFS_ERR_INVALID. */
int tfs_fail(char* err, size_t err_len, const char* fmt, ...) TFS_PRINTF(3, 4);

/* Bytes per element of a TFS_ELEM_* type; 0 for a type no op accepts. */
size_t tfs_elem_size(int elem);

/* Type, count, non-null data and natural alignment of input `index` (called `name`). */
int tfs_check_tensor(const tfs_tensor* t, int index, const char* name, int elem, int64_t count,
                     char* err, size_t err_len);

/* The start of every op's validation: n_inputs is n_f32 or n_i8 (the op's float32 / int8 array
 * counts, activations included), inputs[meta_index] is int32[TFS_META_LEN] and meta[0] is
 * `version`. Sets *meta. */
int tfs_check_meta_head(const tfs_tensor* inputs, size_t n_inputs, size_t n_f32, size_t n_i8,
                        int meta_index, const char* meta_name, int32_t version,
                        const int32_t** meta, char* err, size_t err_len);

/* The meta fields both ops share (dtype, fused activation, zero points, activation range,
 * reserved fields = 0), checked in that order, then n_inputs against the dtype's count. */
int tfs_check_meta_common(const int32_t* meta, size_t n_inputs, size_t n_f32, size_t n_i8,
                          char* err, size_t err_len);

/* Sets the fields both ops' validated layer structs share (same member names: dtype,
 * activation, in_zp, out_zp, act_min, act_max, requant = FP32) from a checked meta. */
#define TFS_SET_COMMON_LAYER_FIELDS(layer, meta)        \
  do {                                                  \
    (layer)->dtype = (meta)[TFS_META_DTYPE];            \
    (layer)->activation = (meta)[TFS_META_ACTIVATION];  \
    (layer)->in_zp = (meta)[TFS_META_IN_ZP];            \
    (layer)->out_zp = (meta)[TFS_META_OUT_ZP];          \
    (layer)->act_min = (meta)[TFS_META_ACT_MIN];        \
    (layer)->act_max = (meta)[TFS_META_ACT_MAX];        \
    (layer)->requant = TFS_REQUANT_FP32;                \
  } while (0)

/* An int8 node's requantization inputs: inputs[first], [first + 1], [first + 2] (named by
 * names[]) are out_multiplier int32[out] (>= 0), out_shift int32[out] (in [-31, 30]) and
 * out_scale float32[out] (in (0, 256)). Sets the three pointers on success. */
int tfs_check_requant_inputs(const tfs_tensor* inputs, int first, const char* const* names,
                             int32_t out, const int32_t** mul, const int32_t** shift,
                             const float** scale, char* err, size_t err_len);

/* Activations x[batch, in] and output y[batch, out] of a layer of this dtype, O(1); sets *batch. */
int tfs_check_io(int32_t in, int32_t out, int32_t dtype, const tfs_tensor* x, const tfs_tensor* y,
                 int32_t* batch, char* err, size_t err_len);

/* ---- Parameter blob (FORMAT.md "Parameter blob"): one constant uint8 node input carrying all
 * of a node's constant arrays as aligned sections. */
#define TFS_BLOB_MAGIC 0x42534654u /* "TFSB" as little-endian bytes */
#define TFS_BLOB_HEADER_BYTES 16
#define TFS_BLOB_ENTRY_BYTES 16
#define TFS_BLOB_ALIGN 16

/* Split a parameter blob into its arrays: tensors[1..] receive the sections (named names[1..]),
 * tensors[0] (the activations' slot) is zeroed; *n_tensors = sections + 1. The blob must have
 * n_f32 - 1 or n_i8 - 1 sections (the op's float32 and int8 array counts, activations included);
 * `tensors` and `names` have n_i8 entries. Checks the header and that every section lies inside
 * the blob, aligned; O(sections). The op's validator checks the arrays themselves. */
int tfs_unpack_params(const void* blob, size_t bytes, size_t n_f32, size_t n_i8,
                      const char* const* names, tfs_tensor* tensors, size_t* n_tensors, char* err,
                      size_t err_len);

/* ---- One custom op's core API, the same for every op ---- */

/* Declares the entry points every op's core has, named prefix_* on its layer type layer_t:
 *   prefix_unpack_params   split a parameter blob into tensors[1..] (tfs_unpack_params; `tensors`
 *                          has room for the op's int8 array count);
 *   prefix_validate_layer  validate a node's constant inputs (inputs[1..]; inputs[0], the
 *                          activations, is not looked at) completely, every rule of FORMAT.md
 *                          "Validation"; fills *layer and returns TFS_OK, else writes err;
 *   prefix_validate_io     the activations and output against a validated layer, O(1); sets *batch;
 *   prefix_workspace_size  scratch bytes compute needs for `batch` rows (0 for float32);
 *   prefix_layer_size      sizeof(layer_t), so the Python side can allocate one blind;
 *   prefix_set_requant     set a validated layer's int8 requantization flavour (TFS_REQUANT_*;
 *                          validate sets FP32, an adapter may change it). */
#define TFS_DECLARE_OP_CORE(prefix, layer_t)                                                    \
  int prefix##_unpack_params(const void* blob, size_t bytes, tfs_tensor* tensors,             \
                             size_t* n_tensors, char* err, size_t err_len);                   \
  int prefix##_validate_layer(const tfs_tensor* inputs, size_t n_inputs, layer_t* layer,      \
                              char* err, size_t err_len);                                     \
  int prefix##_validate_io(const layer_t* layer, const tfs_tensor* x, const tfs_tensor* y,    \
                           int32_t* batch, char* err, size_t err_len);                        \
  size_t prefix##_workspace_size(const layer_t* layer, int32_t batch);                        \
  size_t prefix##_layer_size(void);                                                           \
  int prefix##_set_requant(layer_t* layer, int requant)

/* Defines, in an op's validation file, the parts of TFS_DECLARE_OP_CORE that are the same for
 * every op, from its array names (names[n_i8]: "activations", "values", ...), float32 / int8
 * array counts, meta's array index and format version:
 *   static check_tensor(t, index, elem, count, err, err_len): tfs_check_tensor naming the array;
 *   prefix_validate_layer: non-null arguments, *layer zeroed, tfs_check_meta_head, then the op's
 *     own `static int check_layer(inputs, n_inputs, meta, layer, err, err_len)` (its meta
 *     fields, arrays and layer fields), then an int8 node's requantization arrays (the op's
 *     last three) and the fields every layer has: in, out (meta[1], meta[2] in every op) and
 *     TFS_SET_COMMON_LAYER_FIELDS;
 *   prefix_unpack_params, prefix_validate_io, prefix_layer_size and prefix_set_requant.
 * The op writes check_layer and prefix_workspace_size. */
#define TFS_DEFINE_OP_CORE_COMMON(prefix, layer_t, names, n_f32, n_i8, meta_index, version)     \
  static int check_tensor(const tfs_tensor* t, int index, int elem, int64_t count, char* err, \
                          size_t err_len) {                                                   \
    return tfs_check_tensor(t, index, names[index], elem, count, err, err_len);               \
  }                                                                                           \
  static int check_layer(const tfs_tensor* inputs, size_t n_inputs, const int32_t* meta,      \
                         layer_t* layer, char* err, size_t err_len);                          \
  int prefix##_validate_layer(const tfs_tensor* inputs, size_t n_inputs, layer_t* layer,      \
                              char* err, size_t err_len) {                                    \
    int rc;                                                                                   \
    const int32_t* meta = NULL;                                                               \
    if (inputs == NULL || layer == NULL) return tfs_fail(err, err_len, "null argument");      \
    memset(layer, 0, sizeof *layer);                                                          \
    if ((rc = tfs_check_meta_head(inputs, n_inputs, n_f32, n_i8, meta_index,                  \
                                  names[meta_index], version, &meta, err, err_len)) != TFS_OK) \
      return rc;                                                                              \
    if ((rc = check_layer(inputs, n_inputs, meta, layer, err, err_len)) != TFS_OK) return rc;  \
    if (meta[TFS_META_DTYPE] == TFS_DTYPE_I8 &&                                               \
        (rc = tfs_check_requant_inputs(inputs, (int)(n_i8)-3, names, meta[2],                 \
                                       &layer->multiplier, &layer->shift, &layer->scale, err, \
                                       err_len)) != TFS_OK)                                   \
      return rc;                                                                              \
    layer->in = meta[1];                                                                      \
    layer->out = meta[2];                                                                     \
    TFS_SET_COMMON_LAYER_FIELDS(layer, meta);                                                 \
    return TFS_OK;                                                                            \
  }                                                                                           \
  int prefix##_unpack_params(const void* blob, size_t bytes, tfs_tensor* tensors,             \
                             size_t* n_tensors, char* err, size_t err_len) {                  \
    return tfs_unpack_params(blob, bytes, n_f32, n_i8, names, tensors, n_tensors, err,        \
                             err_len);                                                        \
  }                                                                                           \
  int prefix##_validate_io(const layer_t* layer, const tfs_tensor* x, const tfs_tensor* y,    \
                           int32_t* batch, char* err, size_t err_len) {                       \
    if (layer == NULL) return tfs_fail(err, err_len, "null argument");                        \
    return tfs_check_io(layer->in, layer->out, layer->dtype, x, y, batch, err, err_len);      \
  }                                                                                           \
  size_t prefix##_layer_size(void) { return sizeof(layer_t); }                                \
  int prefix##_set_requant(layer_t* layer, int requant) {                                     \
    if (requant != TFS_REQUANT_FP32 && requant != TFS_REQUANT_FIXED_POINT)                    \
      return TFS_ERR_INVALID;                                                                 \
    layer->requant = requant;                                                                 \
    return TFS_OK;                                                                            \
  }                                                                                           \
  typedef int prefix##_core_common_defined_ /* ends the macro with a `;` at the use */

/* ---- Scalar math shared by the kernels ---- */

/* TFLite's fixed-point requantization (MultiplyByQuantizedMultiplier), exposed for tests. */
int32_t tfs_multiply_by_quantized_multiplier(int32_t acc, int32_t multiplier, int32_t shift);

/* The same, inline: every kernel's epilogue runs it once per output, which on a Cortex-M4 conv
 * (one call per output position and filter) was a large share of the layer.
 * TFLite's SaturatingRoundingDoublingHighMul is (p + nudge) / 2^31 truncated towards zero with
 * p = a * m, nudge = 2^30 if p >= 0 else 1 - 2^30. For p < 0 that is ceil((p + 1 - 2^30) / 2^31)
 * = floor((p + 2^30) / 2^31), and for p >= 0 floor((p + 2^30) / 2^31) as well: one arithmetic
 * shift for both signs (SMULL, ADDS/ADC, two shifts on Arm; |p| <= 2^62, no overflow).
 * RoundingDivideByPOT follows, as TFLite's reference. */
static inline int32_t tfs_mbqm(int32_t acc, int32_t multiplier, int32_t shift) {
  const int32_t left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  /* TFLite multiplies in int32; do it modulo 2^32 (defined behaviour, same result). */
  const int32_t a = (int32_t)((uint32_t)acc << left);
  int32_t high;
  if (a == INT32_MIN && multiplier == INT32_MIN) {
    high = INT32_MAX;
  } else {
    high = (int32_t)(((int64_t)a * (int64_t)multiplier + ((int64_t)1 << 30)) >> 31);
  }
  if (right == 0) return high;
  const int32_t mask = (int32_t)(((int64_t)1 << right) - 1);
  const int32_t rem = high & mask;
  const int32_t threshold = (mask >> 1) + (high < 0 ? 1 : 0);
  return (high >> right) + (rem > threshold ? 1 : 0);
}

static inline float tfs_act_f32(float v, int act) {
  if (act == TFS_ACT_RELU) return v > 0.0f ? v : 0.0f;
  if (act == TFS_ACT_RELU6) return v > 0.0f ? (v < 6.0f ? v : 6.0f) : 0.0f;
  return v;
}

/* Round half to even, independent of the FP environment's rounding mode (|v| < 2^23). */
static inline int32_t tfs_round_half_even(float v) {
  const float f = floorf(v);
  const float d = v - f; /* exact for |v| < 2^23 */
  int32_t r = (int32_t)f;
  if (d > 0.5f || (d == 0.5f && (r & 1) != 0)) r += 1;
  return r;
}

/* int32 accumulator (bias included) -> int8, by flavour. FIXED_POINT is TFLite's reference;
 * FP32 is XNNPACK's: float(acc) * scale, clamp, round half to even, + zero point. */
static inline int8_t tfs_requant_i8(int32_t acc, int32_t requant, int32_t multiplier,
                                    int32_t shift, float scale, int32_t out_zp, int32_t act_min,
                                    int32_t act_max) {
  int32_t v;
  if (requant == TFS_REQUANT_FIXED_POINT) {
    v = tfs_mbqm(acc, multiplier, shift) + out_zp;
    if (v < act_min) v = act_min;
    if (v > act_max) v = act_max;
  } else {
    float f = (float)acc * scale;
    const float lo = (float)(act_min - out_zp), hi = (float)(act_max - out_zp);
    f = f < lo ? lo : (f > hi ? hi : f);
    v = tfs_round_half_even(f) + out_zp;
  }
  return (int8_t)v;
}

#ifdef __cplusplus
}
#endif

#endif /* TFS_COMMON_H_ */
