/* LD_PRELOAD shim for AArch64 programs under QEMU user mode: opening /proc/cpuinfo opens the file
 * named by $TFS_CPUINFO instead. QEMU user mode passes the host's (x86) /proc/cpuinfo through;
 * XNNPACK's cpuinfo library parses it to pick its micro-kernels and crashes on an x86 one
 * (benchmarks/cortex_a/bench_cortex_a.py serves it a Neoverse N1's). Without $TFS_CPUINFO every
 * call passes through unchanged. */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char* redirect(const char* path) {
  const char* f = getenv("TFS_CPUINFO");
  return (f != NULL && path != NULL && strcmp(path, "/proc/cpuinfo") == 0) ? f : path;
}

/* open / openat take a mode only with O_CREAT or O_TMPFILE; reading it regardless is what glibc's
 * own wrappers avoid, so only then. */
static int mode_of(int flags, va_list ap) {
  return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? va_arg(ap, int) : 0;
}

int open(const char* path, int flags, ...) {
  static int (*real)(const char*, int, ...);
  if (real == NULL) *(void**)&real = dlsym(RTLD_NEXT, "open");
  va_list ap;
  va_start(ap, flags);
  const int mode = mode_of(flags, ap);
  va_end(ap);
  return real(redirect(path), flags, mode);
}

int openat(int dir, const char* path, int flags, ...) {
  static int (*real)(int, const char*, int, ...);
  if (real == NULL) *(void**)&real = dlsym(RTLD_NEXT, "openat");
  va_list ap;
  va_start(ap, flags);
  const int mode = mode_of(flags, ap);
  va_end(ap);
  return real(dir, redirect(path), flags, mode);
}

FILE* fopen(const char* path, const char* how) {
  static FILE* (*real)(const char*, const char*);
  if (real == NULL) *(void**)&real = dlsym(RTLD_NEXT, "fopen");
  return real(redirect(path), how);
}
