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

/*
 * Call sites (the kernel's paravirt sites): an indirect call through a member
 * of an ops table (a struct of function pointers), recorded so that LivePatch
 * can rewrite it, once the table is set, into the inline instructions of a
 * known function, a direct "call rel32", NOPs (the function does nothing) or
 * "ud2" (the slot is null) — LivePatch.Sites.CallSiteBackend decides.
 *
 * A site is LP_CALLSITE_LENGTH bytes: NOPs, then "call *SLOT(%rip)" (ff 15
 * disp32) or, for a tail site, "jmp *SLOT(%rip)" (ff 25 disp32) as its LAST
 * instruction, so that a call returns to the end of the site, whatever the
 * site holds before or after it is rewritten.
 *
 * Registers are numbered as x86 encodes them (LivePatch.Sites.GeneralRegisters);
 * a clobber mask has one bit per register a site lets the call change.
 */
#define LP_CALLSITE_LENGTH       16
#define LP_CLOBBER_RAX           0x0001
#define LP_CLOBBER_RCX           0x0002
#define LP_CLOBBER_RDX           0x0004
#define LP_CLOBBER_RBX           0x0008
#define LP_CLOBBER_RBP           0x0020
#define LP_CLOBBER_RSI           0x0040
#define LP_CLOBBER_RDI           0x0080
#define LP_CLOBBER_R8            0x0100
#define LP_CLOBBER_R9            0x0200
#define LP_CLOBBER_R10           0x0400
#define LP_CLOBBER_R11           0x0800
#define LP_CLOBBER_R12           0x1000
#define LP_CLOBBER_R13           0x2000
#define LP_CLOBBER_R14           0x4000
#define LP_CLOBBER_R15           0x8000
#define LP_CLOBBERS_NONE         0x0000
/* rax rcx rdx rsi rdi r8-r11: what a C function may change (System V ABI). */
#define LP_CLOBBERS_CALLER_SAVED 0x0fc7

#ifndef __ASSEMBLER__

/*
 * LP_CALLSITE(ops, member, clobbers): the asm text of one call site calling
 * ops.member, for an asm statement that also lists
 * LP_CALLSITE_OPERANDS(ops, member) among its inputs. ops must be a variable
 * of this module named by an identifier (file scope or global; in a shared
 * object static or hidden), member a function-pointer member. clobbers is the
 * mask of registers the statement lets the call change (a number or LP_CLOBBER_*
 * constants joined by |; it is stringified for the assembler). The statement
 * must itself keep the System V rules a call needs: LP_CALL0..LP_CALL4 do.
 *
 * Entry in ".lp.callsites" (16 bytes, 4-byte aligned): s32 site offset, s32 slot
 * offset (&ops.member), s32 offset of the NUL-terminated name "ops.member" in
 * ".lp.callsite_names", u16 clobbers, u8 type (member offset / 8), u8 site length.
 */
#define LP_CALLSITE(ops, member, clobbers)                                             \
    "691:\n\t.nops " LP_STRINGIFY(LP_CALLSITE_LENGTH) " - 6\n\t"                        \
    "call *" #ops "+%c[lp_offset](%%rip)\n"                                            \
    "692:\n"                                                                           \
    ".pushsection .lp.callsites, \"a\"\n"                                              \
    "\t.balign 4\n"                                                                    \
    "\t.long 691b - .\n"                                                               \
    "\t.long " #ops "+%c[lp_offset] - .\n"                                             \
    "\t.long 693f - .\n"                                                               \
    "\t.word " LP_STRINGIFY(clobbers) "\n"                                             \
    "\t.byte (%c[lp_offset]) >> 3\n"                                                   \
    "\t.byte 692b - 691b\n"                                                            \
    ".popsection\n"                                                                    \
    ".pushsection .lp.callsite_names, \"a\"\n"                                         \
    "693:\t.asciz \"" #ops "." #member "\"\n"                                          \
    ".popsection\n"

/* The inputs LP_CALLSITE refers to: the member's offset, and ops itself (so the compiler keeps it and its stores). */
#define LP_CALLSITE_OPERANDS(ops, member)                                              \
    [lp_offset] "i"(__builtin_offsetof(__typeof__(ops), member)), [lp_ops] "m"(ops)

/*
 * Around the site, outside its recorded bytes: step over the 128-byte red zone
 * (the compiler may keep data below %rsp in a leaf function) and align %rsp to
 * 16 for the call, keeping the old %rsp at 8(%rsp) to come back to.
 */
#define LP_CALL_ENTER_                                                                 \
    "lea -128(%%rsp), %%rsp\n\tpush %%rsp\n\tpush (%%rsp)\n\tand $-16, %%rsp\n\t"
#define LP_CALL_LEAVE_ "mov 8(%%rsp), %%rsp\n\tlea 128(%%rsp), %%rsp\n"

/* Every vector register (and AVX-512 mask register) is caller-saved. */
#define LP_CALL_XMM_CLOBBERS_                                                          \
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",                    \
    "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"
#ifdef __AVX512F__
#define LP_CALL_VECTOR_CLOBBERS_ LP_CALL_XMM_CLOBBERS_,                                \
    "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23",            \
    "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31",            \
    "k1", "k2", "k3", "k4", "k5", "k6", "k7"
#else
#define LP_CALL_VECTOR_CLOBBERS_ LP_CALL_XMM_CLOBBERS_
#endif
#define LP_CALL_CLOBBERS_ "r8", "r9", "r10", "r11", "memory", "cc", LP_CALL_VECTOR_CLOBBERS_

/*
 * LP_CALL0(ops, member) .. LP_CALL4(ops, member, a, b, c, d): expressions that
 * call ops.member with up to four integer or pointer arguments through a
 * recorded call site, and give its return value (rax) as unsigned long (cast
 * it to the member's return type). Every caller-saved register is declared
 * clobbered, so any C function may be in the slot. Needs GNU C.
 *
 *   unsigned long t = LP_CALL0(clock_ops, read);
 *   long n = (long)LP_CALL2(io_ops, write, buffer, length);
 */
#define LP_CALL_(ops, member, outputs, clobbers)                                       \
    __asm__ __volatile__(LP_CALL_ENTER_ LP_CALLSITE(ops, member, LP_CLOBBERS_CALLER_SAVED) LP_CALL_LEAVE_ \
                         : outputs : LP_CALLSITE_OPERANDS(ops, member) : clobbers)
#define LP_CALL0(ops, member)                                                          \
    __extension__({                                                                    \
        unsigned long lp_ret_;                                                         \
        LP_CALL_(ops, member, "=a"(lp_ret_),                                           \
                 LP_STRIP_("rcx", "rdx", "rsi", "rdi", LP_CALL_CLOBBERS_));            \
        lp_ret_;                                                                       \
    })
#define LP_CALL1(ops, member, a)                                                       \
    __extension__({                                                                    \
        unsigned long lp_ret_, lp_a_ = (unsigned long)(a);                             \
        LP_CALL_(ops, member, LP_STRIP_("=a"(lp_ret_), "+D"(lp_a_)),                   \
                 LP_STRIP_("rcx", "rdx", "rsi", LP_CALL_CLOBBERS_));                   \
        lp_ret_;                                                                       \
    })
#define LP_CALL2(ops, member, a, b)                                                    \
    __extension__({                                                                    \
        unsigned long lp_ret_, lp_a_ = (unsigned long)(a), lp_b_ = (unsigned long)(b); \
        LP_CALL_(ops, member, LP_STRIP_("=a"(lp_ret_), "+D"(lp_a_), "+S"(lp_b_)),      \
                 LP_STRIP_("rcx", "rdx", LP_CALL_CLOBBERS_));                          \
        lp_ret_;                                                                       \
    })
#define LP_CALL3(ops, member, a, b, c)                                                 \
    __extension__({                                                                    \
        unsigned long lp_ret_, lp_a_ = (unsigned long)(a), lp_b_ = (unsigned long)(b); \
        unsigned long lp_c_ = (unsigned long)(c);                                      \
        LP_CALL_(ops, member, LP_STRIP_("=a"(lp_ret_), "+D"(lp_a_), "+S"(lp_b_), "+d"(lp_c_)), \
                 LP_STRIP_("rcx", LP_CALL_CLOBBERS_));                                 \
        lp_ret_;                                                                       \
    })
#define LP_CALL4(ops, member, a, b, c, d)                                              \
    __extension__({                                                                    \
        unsigned long lp_ret_, lp_a_ = (unsigned long)(a), lp_b_ = (unsigned long)(b); \
        unsigned long lp_c_ = (unsigned long)(c), lp_d_ = (unsigned long)(d);          \
        LP_CALL_(ops, member, LP_STRIP_("=a"(lp_ret_), "+D"(lp_a_), "+S"(lp_b_), "+d"(lp_c_), "+c"(lp_d_)), \
                 LP_CALL_CLOBBERS_);                                                   \
        lp_ret_;                                                                       \
    })
/* Passes a parenthesised list with commas through one macro argument. */
#define LP_STRIP_(...) __VA_ARGS__

/*
 * LP_OP_CLOBBERS(function, mask); at file scope: declares that function (an
 * assembly function of this module, say) changes only the registers in mask
 * when called, so that a site declaring fewer clobbers than a C call may still
 * call it directly. Functions not listed change every caller-saved register.
 * Entry in ".lp.op_clobbers" (8 bytes, 4-byte aligned): s32 function offset,
 * u16 mask, u16 zero.
 */
#define LP_OP_CLOBBERS(function, mask)                                                 \
    __asm__(".pushsection .lp.op_clobbers, \"a\"\n\t.balign 4\n\t.long " #function " - .\n\t" \
            ".word " LP_STRINGIFY(mask) "\n\t.word 0\n.popsection\n")

#else /* __ASSEMBLER__: the same sites and table entries for .S files (preprocessed by gcc) */

/*
 * LP_CALLSITE_ASM(ops, member, offset, clobbers): "call *ops+offset(%rip)" as a
 * recorded call site; LP_TAILSITE_ASM the same with "jmp", for a function that
 * ends by jumping to ops.member. offset is the member's byte offset (a number);
 * member only names the site ("ops.member"). The code around must keep the
 * rules of a call itself (%rsp + 8 aligned to 16 at the call).
 */
#define LP_CALLSITE_ASM_(insn, ops, member, offset, clobbers)                          \
    691: .nops LP_CALLSITE_LENGTH - 6; insn *ops+offset(%rip); 692:;                   \
    .pushsection .lp.callsites, "a"; .balign 4; .long 691b - .; .long ops+offset - .;  \
    .long 693f - .; .word clobbers; .byte (offset) >> 3; .byte 692b - 691b; .popsection; \
    .pushsection .lp.callsite_names, "a"; 693: .ascii #ops; .ascii "."; .asciz #member; .popsection
#define LP_CALLSITE_ASM(ops, member, offset, clobbers) LP_CALLSITE_ASM_(call, ops, member, offset, clobbers)
#define LP_TAILSITE_ASM(ops, member, offset, clobbers) LP_CALLSITE_ASM_(jmp, ops, member, offset, clobbers)

/* LP_OP_CLOBBERS(function, mask): as in C, for a function written in the .S file. */
#define LP_OP_CLOBBERS(function, mask)                                                 \
    .pushsection .lp.op_clobbers, "a"; .balign 4; .long function - .; .word mask; .word 0; .popsection

#endif /* __ASSEMBLER__ */

#endif /* LIVEPATCH_SITES_H */
