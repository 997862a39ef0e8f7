/* A QEMU TCG plugin (API v1, QEMU 7.2) for qemu-aarch64 (user mode) that counts the A64
 * instructions executed between calls of one marker function and estimates Arm Neoverse N1
 * cycles from a per-instruction-class table.
 *
 *   qemu-aarch64 -cpu neoverse-n1 -plugin ./tfs_a64_cycles_plugin.so,mark=0x<tfs_mark>,out=f ...
 *
 * Every execution of the instruction at `mark` closes the current segment and opens the next; at
 * exit one line per segment "<instructions> <estimated cycles> <unclassified>" is written to
 * `out`. Instruction counts are exact.
 *
 * The cycle estimate: each executed instruction costs its class's reciprocal throughput (issue
 * cycles per instruction) from the "Arm Neoverse N1 Software Optimization Guide" (Arm, section
 * "Instruction characteristics"; the same numbers LLVM's AArch64SchedNeoverseN1.td transcribes),
 * on N1's issue pipes B (1), I = S0/S1/M (3), M (1), L (2), V = V0/V1 (2):
 *   branch 1 (B);  integer ALU 1/3 (I);  ALU with a shifted (other than LSL <= 4) or extended
 *   register 1 (M);  integer multiply 1 (M);  integer divide 5 (M);
 *   load / store (any form, per register moved for LD1/ST1 lists and LDP/STP of Q) 1/2 (L),
 *   + 1/3 (I) for a vector register with a register offset, + 1/2 (V) for one lane / replicate;
 *   FP and ASIMD arithmetic, FMLA, SDOT/UDOT, logic, moves, permutes, widening moves 1/2 (V);
 *   ASIMD integer multiply(-accumulate)(long) (MUL, MLA, SMULL, SMLAL, SQDMULH, ...) 1 (V0);
 *   ASIMD pairwise add-accumulate long (SADALP), shifts, reductions (ADDV), saturating narrows
 *   1 (V1);  ASIMD FP <-> integer conversions and rounding, Q-form, 2 (two V0 uops);
 *   GPR -> vector (INS, DUP from a general register) 1 (M);  vector -> GPR 1 (V1);
 *   FP divide / square root 7 (V0).
 * Summing reciprocal throughputs assumes no two classes overlap (each instruction waits for its
 * pipe, not for its operands) and every access hits L1: a comparison tool, not a cycle-accurate
 * simulation (latency chains, cache misses and branch mispredictions are not modelled).
 *
 * The plugin API declarations, the segment scheme and the install function are
 * benchmarks/qemu_plugin_common.h's, shared with benchmarks/mcu/tfs_cycles_plugin.c (the
 * Cortex-M4 counterpart). */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>

#define TFS_PLUGIN_NAME "tfs_a64_cycles_plugin"
#define TFS_PLUGIN_DEFAULT_OUT "tfs_a64_cycles.txt"

struct insn_info {
  uint64_t vaddr;
  uint32_t size;
  uint32_t cost;   /* sixths of a cycle */
  uint8_t unknown; /* mnemonic not in the table (costed as an integer ALU op) */
};

#include "../qemu_plugin_common.h"

/* Costs in sixths of a cycle (1/3 = 2, 1/2 = 3, 1 = 6), so sums stay integers. */
enum { C_THIRD = 2, C_HALF = 3, C_ONE = 6 };

static uint64_t g_cost[MAX_SEGMENTS], g_unknown[MAX_SEGMENTS];

static bool is(const char* m, const char* const* list) {
  for (; *list; ++list)
    if (strcmp(m, *list) == 0) return true;
  return false;
}
static bool starts(const char* m, const char* p) { return strncmp(m, p, strlen(p)) == 0; }

/* Number of registers in a "{v0.4s, v1.4s}" or "{v0.4s-v3.4s}" list (1 if none). */
static int reg_list(const char* ops) {
  const char* a = strchr(ops, '{');
  const char* b = a ? strchr(a, '}') : NULL;
  if (!a || !b) return 1;
  const char* dash = memchr(a, '-', (size_t)(b - a));
  if (dash) {
    const int lo = atoi(a + 2), hi = atoi(dash + 2);
    return hi >= lo ? hi - lo + 1 : 1;
  }
  int n = 1;
  for (const char* p = a; p < b; ++p) n += *p == ',';
  return n;
}

static const char* const kBranch[] = {"b", "bl", "br", "blr", "ret", "cbz", "cbnz", "tbz", "tbnz", NULL};
static const char* const kIntMul[] = {"mul", "madd", "msub", "mneg", "smull", "umull", "smaddl",
                                      "umaddl", "smsubl", "umsubl", "smulh", "umulh", NULL};
static const char* const kVecMulV0[] = {"mul", "mla", "mls", "smull", "smull2", "umull", "umull2",
                                        "smlal", "smlal2", "umlal", "umlal2", "smlsl", "smlsl2",
                                        "umlsl", "umlsl2", "sqdmulh", "sqrdmulh", "sqdmull",
                                        "sqdmull2", "sqdmlal", "sqdmlal2", "pmul", "pmull", NULL};
static const char* const kVecV1[] = {"sadalp", "uadalp", "addv", "saddlv", "uaddlv", "smaxv",
                                     "sminv", "umaxv", "uminv", "sshr", "ushr", "shl", "sshl",
                                     "ushl", "srshl", "urshl", "sqshl", "uqshl", "sqrshl",
                                     "uqrshl", "srshr", "urshr", "ssra", "usra", "srsra", "ursra",
                                     "sshll", "sshll2", "ushll", "ushll2", "shrn", "shrn2",
                                     "rshrn", "rshrn2", "sqshrn", "sqshrn2", "sqrshrn", "sqrshrn2",
                                     "sqshrun", "sqshrun2", "sqrshrun", "sqrshrun2", "uqshrn",
                                     "uqrshrn", "sqxtn", "sqxtn2", "uqxtn", "uqxtn2", "sqxtun",
                                     "sqxtun2", "saba", "uaba", "sabal", "uabal", "sli", "sri",
                                     NULL};
static const char* const kFpCvt[] = {"fcvtns", "fcvtnu", "fcvtzs", "fcvtzu", "fcvtas", "fcvtau",
                                     "fcvtms", "fcvtmu", "fcvtps", "fcvtpu", "scvtf", "ucvtf",
                                     "frintn", "frinta", "frintm", "frintp", "frintz", "frintx",
                                     "frinti", NULL};

static void classify(insn_info* info, const char* dis) {
  char m[24] = {0};
  size_t i = 0;
  while (dis[i] && !isspace((unsigned char)dis[i]) && i < sizeof m - 1) { m[i] = dis[i]; ++i; }
  const char* ops = dis + i;
  while (*ops == ' ') ++ops;
  const bool vec = ops[0] == 'v' && isdigit((unsigned char)ops[1]);  /* first operand Vn.T */
  const bool q = vec && (strstr(ops, ".4s") || strstr(ops, ".2d") || strstr(ops, ".8h") ||
                         strstr(ops, ".16b"));
  const bool fp_or_vec = vec || ((ops[0] == 's' || ops[0] == 'd' || ops[0] == 'h' || ops[0] == 'q' ||
                                  ops[0] == 'b') && isdigit((unsigned char)ops[1]));
  info->unknown = 0;
  if (strcmp(m, ".byte") == 0) {
    /* QEMU 7.2's disassembler predates the dot-product extension and prints SDOT / UDOT (vector
     * or by element) as raw bytes: decode them from the encoding. */
    unsigned b[4] = {0, 0, 0, 0};
    const uint32_t w = sscanf(ops, "%x, %x, %x, %x", &b[0], &b[1], &b[2], &b[3]) == 4
                           ? (uint32_t)(b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24) : 0;
    if ((w & 0x9FE0FC00u) == 0x0E809400u || (w & 0x9FC0F400u) == 0x0F80E000u) {
      info->cost = C_HALF;
      return;
    }
    info->cost = C_THIRD;
    info->unknown = 1;
    return;
  }
  if (starts(m, "b.") || is(m, kBranch)) { info->cost = C_ONE; return; }
  if (starts(m, "ld") || starts(m, "st")) {
    /* LD1/ST1 {list}: one L slot per register; LDP/STP of Q registers: two. */
    int regs = (starts(m, "ld1") || starts(m, "st1") || starts(m, "ld2") || starts(m, "st2") ||
                starts(m, "ld3") || starts(m, "st3") || starts(m, "ld4") || starts(m, "st4"))
                   ? reg_list(ops) : 1;
    if ((strcmp(m, "ldp") == 0 || strcmp(m, "stp") == 0 || strcmp(m, "ldnp") == 0 ||
         strcmp(m, "stnp") == 0) && ops[0] == 'q')
      regs = 2;
    info->cost = (uint32_t)(C_HALF * regs);
    /* A vector register loaded or stored with a register offset ("[xN, xM...]") also takes an
     * I-pipe slot; one lane or replicate (LD1 {v.s}[i], LD1R) also a V-pipe slot. */
    const char* br = strchr(ops, '[');
    const char* comma = br ? strchr(br, ',') : NULL;
    const char* close = br ? strchr(br, ']') : NULL;
    if (fp_or_vec && comma && close && comma < close && (comma[2] == 'x' || comma[2] == 'w'))
      info->cost += C_THIRD;
    if (strstr(ops, "}[") || starts(m, "ld1r") || starts(m, "ld2r") || starts(m, "ld3r") ||
        starts(m, "ld4r"))
      info->cost += C_HALF;
    return;
  }
  if (strcmp(m, "sdiv") == 0 || strcmp(m, "udiv") == 0) { info->cost = 5 * C_ONE; return; }
  if (strcmp(m, "fdiv") == 0 || strcmp(m, "fsqrt") == 0) { info->cost = 7 * C_ONE; return; }
  if (vec && is(m, kVecMulV0)) { info->cost = (q && (!strcmp(m, "mul") || !strcmp(m, "mla") || !strcmp(m, "mls"))) ? 2 * C_ONE : C_ONE; return; }
  if (!fp_or_vec && is(m, kIntMul)) { info->cost = C_ONE; return; }
  if (is(m, kVecV1)) { info->cost = C_ONE; return; }
  if (is(m, kFpCvt)) { info->cost = q ? 2 * C_ONE : C_ONE; return; }
  if ((strcmp(m, "ins") == 0 || strcmp(m, "mov") == 0 || strcmp(m, "dup") == 0) && vec &&
      (strstr(ops, ", w") || strstr(ops, ", x"))) { info->cost = C_ONE; return; } /* GPR -> V */
  if ((strcmp(m, "umov") == 0 || strcmp(m, "smov") == 0 || strcmp(m, "fmov") == 0 ||
       strcmp(m, "mov") == 0) && (ops[0] == 'w' || ops[0] == 'x') &&
      (strstr(ops, ", v") || strstr(ops, ", s") || strstr(ops, ", d"))) { info->cost = C_ONE; return; }
  if (fp_or_vec) { info->cost = C_HALF; return; } /* FP / ASIMD arithmetic, FMLA, SDOT, moves */
  /* Integer data processing. A shifted register operand other than LSL #0..4, or an extended
   * one, issues on M only. */
  const char* sh = strstr(ops, ", lsl #");
  if ((sh && atoi(sh + 7) > 4) || strstr(ops, ", lsr #") || strstr(ops, ", asr #") ||
      strstr(ops, ", ror #") || strstr(ops, "xtw") || strstr(ops, "xtb") || strstr(ops, "xth") ||
      strstr(ops, "xtx")) {
    if (!(starts(m, "and") || starts(m, "orr") || starts(m, "eor") || starts(m, "bic") ||
          starts(m, "orn") || starts(m, "eon")) || strstr(ops, "xt")) {
      info->cost = C_ONE;
      return;
    }
  }
  static const char* const kAlu[] = {
      "add", "adds", "sub", "subs", "cmp", "cmn", "tst", "and", "ands", "orr", "eor", "bic",
      "orn", "eon", "mov", "movz", "movk", "movn", "mvn", "neg", "negs", "csel", "csinc", "csinv",
      "csneg", "cset", "csetm", "cinc", "cneg", "ccmp", "ccmn", "adr", "adrp", "lsl", "lsr", "asr",
      "ror", "lslv", "lsrv", "asrv", "ubfx", "sbfx", "ubfiz", "sbfiz", "ubfm", "sbfm", "bfi",
      "bfxil", "bfm", "extr", "sxtw", "sxth", "sxtb", "uxth", "uxtb", "clz", "cls", "rbit", "rev",
      "rev16", "rev32", "nop", "adc", "sbc", "ngc", "hint", "prfm", "prfum", NULL};
  info->cost = C_THIRD;
  info->unknown = !is(m, kAlu);
}

static void on_exec(unsigned int vcpu, void* udata) {
  (void)vcpu;
  const insn_info* in = (const insn_info*)udata;
  tfs_plugin_next_segment(in);
  g_insns[g_seg] += 1;
  g_cost[g_seg] += in->cost;
  g_unknown[g_seg] += in->unknown;
}

static void write_segment(FILE* f, int seg) {
  fprintf(f, "%llu %.1f %llu\n", (unsigned long long)g_insns[seg], (double)g_cost[seg] / C_ONE,
          (unsigned long long)g_unknown[seg]);
}
