/*
 * sites.h — build-time patch sites for LivePatch (user-space analogue of the
 * Linux kernel's <asm/alternative.h>).
 *
 * The macros expand to strings for inline asm. Each one leaves the original
 * code in place and records where it is in a table section that LivePatch
 * reads from the linked module (LivePatch.Sites.SiteTables). Every offset in
 * a table is self-relative: ".long target - ." — the entry field's own
 * address plus the stored value gives the target's address, so the tables
 * need no dynamic relocations in a PIE or shared object.
 * docs/sites.md describes the table formats byte by byte.
 *
 *   __asm__ __volatile__(LP_ALTERNATIVE("mov %1, %0", "popcnt %1, %0", LP_FEATURE_POPCNT)
 *                        : "=r"(result) : "r"(value));
 *   __asm__ __volatile__(LP_LOCK_PREFIX "incl %0" : "+m"(counter));
 *
 * (__asm__ __volatile__ works under -std=c11, where plain "asm" is not a keyword.)
 * The numeric local labels 661–667 and 671 are used by the expansions; do not
 * use them in the instructions passed to the macros.
 */
#ifndef LIVEPATCH_SITES_H
#define LIVEPATCH_SITES_H

/* CPU features, numbered as LivePatch.X86.CpuFeature (stable numbers). */
#define LP_FEATURE_SSE2         0
#define LP_FEATURE_SSE3         1
#define LP_FEATURE_SSSE3        2
#define LP_FEATURE_SSE41        3
#define LP_FEATURE_SSE42        4
#define LP_FEATURE_POPCNT       5
#define LP_FEATURE_CX16         6
#define LP_FEATURE_MOVBE        7
#define LP_FEATURE_AES          8
#define LP_FEATURE_PCLMULQDQ    9
#define LP_FEATURE_FMA          10
#define LP_FEATURE_F16C         11
#define LP_FEATURE_RDRAND       12
#define LP_FEATURE_AVX          13
#define LP_FEATURE_AVX2         14
#define LP_FEATURE_AVX512F      15
#define LP_FEATURE_AVX512DQ     16
#define LP_FEATURE_AVX512BW     17
#define LP_FEATURE_AVX512VL     18
#define LP_FEATURE_BMI1         19
#define LP_FEATURE_BMI2         20
#define LP_FEATURE_ADX          21
#define LP_FEATURE_RDSEED       22
#define LP_FEATURE_SHA          23
#define LP_FEATURE_ERMS         24
#define LP_FEATURE_FSRM         25
#define LP_FEATURE_CLFLUSHOPT   26
#define LP_FEATURE_CLWB         27
#define LP_FEATURE_RDTSCP       28
#define LP_FEATURE_LZCNT        29
#define LP_FEATURE_HYPERVISOR   30

#define LP_STRINGIFY_(x) #x
#define LP_STRINGIFY(x) LP_STRINGIFY_(x)

/*
 * LP_ALTERNATIVE(oldinstr, newinstr, feature): "oldinstr" runs unless
 * LivePatch finds "feature" and copies "newinstr" over the site. The site is
 * padded with NOPs to the replacement's length when the replacement is longer
 * (in GNU as a true comparison is -1, hence the leading minus).
 *
 * Entry in ".lp.altinstructions" (12 bytes, 4-byte aligned):
 *   s32 site offset, s32 replacement offset, u16 feature, u8 site length,
 *   u8 replacement length.
 * The replacement bytes go to ".lp.altinstr_replacement" (never executed in
 * place).
 */
#define LP_ALTERNATIVE(oldinstr, newinstr, feature)                                    \
    "661:\n\t" oldinstr "\n"                                                           \
    "662:\n\t"                                                                         \
    ".nops -(((665f - 664f) - (662b - 661b)) > 0) * ((665f - 664f) - (662b - 661b))\n" \
    "663:\n"                                                                           \
    ".pushsection .lp.altinstructions, \"a\"\n"                                        \
    "\t.balign 4\n"                                                                    \
    "\t.long 661b - .\n"                                                               \
    "\t.long 664f - .\n"                                                               \
    "\t.word " LP_STRINGIFY(feature) "\n"                                              \
    "\t.byte 663b - 661b\n"                                                            \
    "\t.byte 665f - 664f\n"                                                            \
    ".popsection\n"                                                                    \
    ".pushsection .lp.altinstr_replacement, \"ax\"\n"                                  \
    "664:\n\t" newinstr "\n"                                                           \
    "665:\n"                                                                           \
    ".popsection\n"

/*
 * LP_ALTERNATIVE_2(oldinstr, newinstr1, feature1, newinstr2, feature2): two
 * replacements for one site (the kernel's ALTERNATIVE_2). The site is padded
 * with NOPs to the longer replacement; it gets two ".lp.altinstructions"
 * entries with the same site address and length, in this order, and the last
 * one whose feature the CPU has wins (so list the better replacement second).
 * LP_MAX_(a, b) is max(a, b) for GNU as, where a true comparison is -1 and
 * "&" binds tighter than "<" and "+".
 */
#define LP_MAX_(a, b) "((" a ") + (((" b ") - (" a ")) & ((" a ") < (" b "))))"
#define LP_ALTERNATIVE_2(oldinstr, newinstr1, feature1, newinstr2, feature2)           \
    "661:\n\t" oldinstr "\n"                                                           \
    "662:\n\t"                                                                         \
    ".nops -((" LP_MAX_("665f - 664f", "667f - 666f") " - (662b - 661b)) > 0) * ("     \
        LP_MAX_("665f - 664f", "667f - 666f") " - (662b - 661b))\n"                    \
    "663:\n"                                                                           \
    ".pushsection .lp.altinstructions, \"a\"\n"                                        \
    "\t.balign 4\n"                                                                    \
    "\t.long 661b - .\n"                                                               \
    "\t.long 664f - .\n"                                                               \
    "\t.word " LP_STRINGIFY(feature1) "\n"                                             \
    "\t.byte 663b - 661b\n"                                                            \
    "\t.byte 665f - 664f\n"                                                            \
    "\t.long 661b - .\n"                                                               \
    "\t.long 666f - .\n"                                                               \
    "\t.word " LP_STRINGIFY(feature2) "\n"                                             \
    "\t.byte 663b - 661b\n"                                                            \
    "\t.byte 667f - 666f\n"                                                            \
    ".popsection\n"                                                                    \
    ".pushsection .lp.altinstr_replacement, \"ax\"\n"                                  \
    "664:\n\t" newinstr1 "\n"                                                          \
    "665:\n"                                                                           \
    "666:\n\t" newinstr2 "\n"                                                          \
    "667:\n"                                                                           \
    ".popsection\n"

/*
 * LP_LOCK_PREFIX: put in front of an instruction in inline asm; emits "lock"
 * and records its address in ".lp.smp_locks" as one s32 self-relative offset
 * (4 bytes, 4-byte aligned), as the kernel's LOCK_PREFIX does.
 */
#define LP_LOCK_PREFIX                                                                 \
    ".pushsection .lp.smp_locks, \"a\"\n"                                              \
    "\t.balign 4\n"                                                                    \
    "\t.long 671f - .\n"                                                               \
    ".popsection\n"                                                                    \
    "671:\n\tlock; "

/*
 * LP_STATIC_BRANCH(key): an expression, 0 until the key is switched on, then 1, at the cost of a 5-byte NOP
 * (the kernel's static_branch_unlikely). The site is "nopl 0(%rax,%rax,1)"; switching the key on rewrites it into
 * "jmp" to the on path. key is a bare identifier; its name is recorded as a string.
 *
 *   if (LP_STATIC_BRANCH(tracing)) trace(...);
 *
 * Entry in ".lp.static_keys" (12 bytes, 4-byte aligned): s32 site offset, s32 on-path offset, s32 offset of the
 * key's NUL-terminated name in ".lp.static_key_names". Needs GNU C (asm goto, statement expressions).
 */
#define LP_STATIC_BRANCH(key)                                                          \
    __extension__({                                                                    \
        __label__ lp_on_;                                                              \
        int lp_taken_ = 0;                                                             \
        __asm__ goto("681:\n\t.nops 5, 5\n"                                            \
                     ".pushsection .lp.static_keys, \"a\"\n"                            \
                     "\t.balign 4\n"                                                   \
                     "\t.long 681b - .\n"                                              \
                     "\t.long %l[lp_on_] - .\n"                                        \
                     "\t.long 682f - .\n"                                              \
                     ".popsection\n"                                                   \
                     ".pushsection .lp.static_key_names, \"a\"\n"                       \
                     "682:\t.asciz \"" #key "\"\n"                                      \
                     ".popsection\n"                                                   \
                     : : : : lp_on_);                                                  \
        if (0) {                                                                       \
        lp_on_:                                                                        \
            lp_taken_ = 1;                                                             \
        }                                                                              \
        lp_taken_;                                                                     \
    })

#endif /* LIVEPATCH_SITES_H */
