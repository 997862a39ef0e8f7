/* Runs a one-input, one-output .tflite through the ai-edge-litert wheel's libLiteRt.so C API
 * (CPU, XNNPACK, one thread) so that a counting QEMU plugin can measure one inference:
 *
 *   litert_run LIBLITERT MODEL [N_PAIRS]
 *
 * The input is filled with a fixed pattern; the model is run once to warm up (XNNPACK packs its
 * weights on the first run), then tfs_mark() is called before and after each of two more runs,
 * so the plugin's segments 1 and 3 are one inference each (2 is the mark between them). The
 * C API calls are those of tflite_export/runtime.py (declared here by hand: the wheel ships no
 * headers). Prints the output's checksum, or the failing call, on stdout.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  unsigned rank : 7;
  unsigned has_strides : 1;
  int32_t dimensions[8];
  uint32_t strides[8];
} Layout;
typedef struct {
  int element_type;
  Layout layout;
} RankedType;
_Static_assert(sizeof(Layout) == 68 && sizeof(RankedType) == 72, "LiteRt struct sizes");

typedef void* H;
#define FN(name, ...) static int (*name)(__VA_ARGS__)
FN(LiteRtCreateEnvironment, int, const void*, H*);
FN(LiteRtCreateModelFromFile, H, const char*, H*);
FN(LiteRtCreateOptions, H*);
FN(LiteRtSetOptionsHardwareAccelerators, H, int);
FN(LiteRtCreateOpaqueOptions, const char*, void*, void (*)(void*), H*);
FN(LiteRtAddOpaqueOptions, H, H);
FN(LiteRtCreateCompiledModel, H, H, H, H*);
FN(LiteRtGetModelSignature, H, size_t, H*);
FN(LiteRtGetSignatureInputTensorByIndex, H, size_t, H*);
FN(LiteRtGetSignatureOutputTensorByIndex, H, size_t, H*);
FN(LiteRtGetRankedTensorType, H, RankedType*);
FN(LiteRtCreateTensorBufferFromHostMemory, const RankedType*, void*, size_t, void (*)(void*), H*);
FN(LiteRtRunCompiledModel, H, size_t, size_t, H*, size_t, H*);

/* The plugin's segment boundary: every execution of this function's first instruction. */
__attribute__((noinline)) void tfs_mark(void) { __asm__ volatile("" ::: "memory"); }

static size_t elem_size(int t) { return t == 1 || t == 2 ? 4 : 1; } /* f32, i32; i8, u8 */

static size_t count(const Layout* l) {
  size_t n = 1;
  for (unsigned i = 0; i < l->rank; ++i) n *= (size_t)l->dimensions[i];
  return n;
}

#define CHECK(call)                                          \
  do {                                                       \
    int st_ = (call);                                        \
    if (st_ != 0) {                                          \
      printf("%s failed with LiteRtStatus %d\n", #call, st_); \
      return 1;                                              \
    }                                                        \
  } while (0)

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s LIBLITERT MODEL\n", argv[0]);
    return 2;
  }
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL);
  if (lib == NULL) {
    printf("dlopen: %s\n", dlerror());
    return 1;
  }
#define LOAD(name)                                                       \
  if ((*(void**)&name = dlsym(lib, #name)) == NULL) {                    \
    printf("missing symbol %s\n", #name);                                \
    return 1;                                                            \
  }
  LOAD(LiteRtCreateEnvironment) LOAD(LiteRtCreateModelFromFile) LOAD(LiteRtCreateOptions)
  LOAD(LiteRtSetOptionsHardwareAccelerators) LOAD(LiteRtCreateOpaqueOptions)
  LOAD(LiteRtAddOpaqueOptions) LOAD(LiteRtCreateCompiledModel) LOAD(LiteRtGetModelSignature)
  LOAD(LiteRtGetSignatureInputTensorByIndex) LOAD(LiteRtGetSignatureOutputTensorByIndex)
  LOAD(LiteRtGetRankedTensorType) LOAD(LiteRtCreateTensorBufferFromHostMemory)
  LOAD(LiteRtRunCompiledModel)

  H env = NULL, model = NULL, opts = NULL, opaque = NULL, cm = NULL, sig = NULL, tin = NULL,
    tout = NULL, bin = NULL, bout = NULL;
  CHECK(LiteRtCreateEnvironment(0, NULL, &env));
  CHECK(LiteRtCreateModelFromFile(env, argv[2], &model));
  CHECK(LiteRtCreateOptions(&opts));
  CHECK(LiteRtSetOptionsHardwareAccelerators(opts, 1 /* CPU */));
  char* toml = strdup("num_threads = 1\n"); /* the options own it (freed with free) */
  CHECK(LiteRtCreateOpaqueOptions("xnnpack", toml, free, &opaque));
  CHECK(LiteRtAddOpaqueOptions(opts, opaque));
  CHECK(LiteRtCreateCompiledModel(env, model, opts, &cm));
  CHECK(LiteRtGetModelSignature(model, 0, &sig));
  CHECK(LiteRtGetSignatureInputTensorByIndex(sig, 0, &tin));
  CHECK(LiteRtGetSignatureOutputTensorByIndex(sig, 0, &tout));
  RankedType rin, rout;
  CHECK(LiteRtGetRankedTensorType(tin, &rin));
  CHECK(LiteRtGetRankedTensorType(tout, &rout));
  const size_t nin = count(&rin.layout) * elem_size(rin.element_type);
  const size_t nout = count(&rout.layout) * elem_size(rout.element_type);
  void *x = NULL, *y = NULL;
  if (posix_memalign(&x, 64, nin + 64) || posix_memalign(&y, 64, nout + 64)) return 1;
  for (size_t i = 0; i < nin; ++i) ((unsigned char*)x)[i] = (unsigned char)(i * 37 % 61);
  if (rin.element_type == 1)
    for (size_t i = 0; i < nin / 4; ++i) ((float*)x)[i] = (float)(i % 17) / 17.0f - 0.5f;
  CHECK(LiteRtCreateTensorBufferFromHostMemory(&rin, x, nin, NULL, &bin));
  CHECK(LiteRtCreateTensorBufferFromHostMemory(&rout, y, nout, NULL, &bout));
  CHECK(LiteRtRunCompiledModel(cm, 0, 1, &bin, 1, &bout)); /* warm-up */
  for (int i = 0; i < 2; ++i) {
    tfs_mark();
    CHECK(LiteRtRunCompiledModel(cm, 0, 1, &bin, 1, &bout));
  }
  tfs_mark();
  unsigned long sum = 0;
  for (size_t i = 0; i < nout; ++i) sum = sum * 31 + ((unsigned char*)y)[i];
  printf("ok in=%zu out=%zu type=%d checksum=%lu\n", nin, nout, rout.element_type, sum);
  return 0; /* the process exits; teardown is not measured */
}
