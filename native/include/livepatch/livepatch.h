/*
 * livepatch.h — macros a LivePatch payload uses to say what it replaces.
 *
 * A payload is one C file compiled to a relocatable object:
 *     gcc -c -O2 -fPIC -ffunction-sections -I native/include fix.c -o fix.o
 * Each macro below writes one struct livepatch_record into section
 * ".livepatch.funcs"; LivePatch reads those records, with their relocations,
 * when it loads the payload. docs/payloads.md describes the format byte by byte.
 */
#ifndef LIVEPATCH_LIVEPATCH_H
#define LIVEPATCH_LIVEPATCH_H

#include <stdint.h>

/* Record kinds (the "kind" field); the loader refuses any other. */
#define LIVEPATCH_KIND_REPLACE          1u /* a = old name ("name" or "module!name"), b = new function */
#define LIVEPATCH_KIND_ORIGINAL         2u /* a = old name, b = undefined symbol resolved to the old code's trampoline */
#define LIVEPATCH_KIND_DEPENDS          3u /* a = name of a payload that must be applied first */
#define LIVEPATCH_KIND_TARGET_BUILD_ID  4u /* a = module name, b = expected build-id in hex */
#define LIVEPATCH_KIND_PRE_APPLY        5u /* a = int hook(void) run before apply; non-zero vetoes */
#define LIVEPATCH_KIND_POST_APPLY       6u /* a = void hook(void) run after apply */
#define LIVEPATCH_KIND_PRE_REVERT       7u /* a = int hook(void) run before revert; non-zero vetoes */
#define LIVEPATCH_KIND_POST_REVERT      8u /* a = void hook(void) run after revert */

/* One record: 24 bytes, 8-byte aligned, little-endian. "size" is always
 * sizeof(struct livepatch_record) so that readers can validate it. */
struct livepatch_record {
    uint32_t kind;   /* offset 0: one of LIVEPATCH_KIND_* */
    uint32_t size;   /* offset 4: 24 */
    const void *a;   /* offset 8: meaning depends on kind (R_X86_64_64 relocation) */
    const void *b;   /* offset 16: meaning depends on kind (R_X86_64_64 relocation) */
};

#define LIVEPATCH_CONCAT_INNER_(x, y) x##y
#define LIVEPATCH_CONCAT_(x, y) LIVEPATCH_CONCAT_INNER_(x, y)

/* Low-level: emits one record of any kind under a unique static name.
 * Payloads use the named macros below; this one exists for them and for tests. */
#define LIVEPATCH_RECORD_(record_kind, field_a, field_b)                                   \
    static const struct livepatch_record LIVEPATCH_CONCAT_(livepatch_record_, __COUNTER__) \
        __attribute__((used, section(".livepatch.funcs"), aligned(8))) = {                \
            (record_kind), (uint32_t)sizeof(struct livepatch_record),                      \
            (const void *)(field_a), (const void *)(field_b) }

/* Replaces the target's function old_name (a string literal: "name", or
 * "module!name" when several modules define name) with new_function, which may
 * be static. */
#define LIVEPATCH_REPLACE(old_name, new_function) \
    LIVEPATCH_RECORD_(LIVEPATCH_KIND_REPLACE, "" old_name, (new_function))

/*
 * LIVEPATCH_DEPENDS("name"): apply refuses this payload unless the payload "name" is applied in the target.
 */
#define LIVEPATCH_DEPENDS(payload_name) \
    LIVEPATCH_RECORD_(LIVEPATCH_KIND_DEPENDS, "" payload_name, 0)

/*
 * LIVEPATCH_TARGET_BUILD_ID("module", "hex"): this payload was built against the module (its file name, e.g. "app"
 * or "libc.so.6") whose GNU build-id is hex (readelf -n); check and apply refuse a process whose module has another
 * one (override with --force, recorded in the target).
 */
#define LIVEPATCH_TARGET_BUILD_ID(module, build_id) \
    LIVEPATCH_RECORD_(LIVEPATCH_KIND_TARGET_BUILD_ID, "" module, "" build_id)

/*
 * LIVEPATCH_ORIGINAL(old_function, original): declares original, a function of old_function's type, that runs the
 * code old_function had before this payload: the instructions the jump displaced, relocated into a trampoline near
 * the target, then a jump back into old_function after them. Declare old_function first (extern, under the target's
 * name; static functions of the target too) and replace it in the same payload. Calling old_function itself would
 * enter the new function again.
 *     extern int compute(int);
 *     LIVEPATCH_ORIGINAL(compute, original_compute);
 *     static int compute_logged(int x) { calls++; return original_compute(x); }
 *     LIVEPATCH_REPLACE("compute", compute_logged);
 */
#define LIVEPATCH_ORIGINAL(old_function, original) \
    extern __typeof__(old_function) original;      \
    LIVEPATCH_RECORD_(LIVEPATCH_KIND_ORIGINAL, #old_function, (original))

/*
 * Hooks: functions of the payload that the target runs, on one of its threads (hijacked while the others run on),
 * at a step of apply or revert; at most one of each kind per payload. docs/payloads.md has their contract: short,
 * no locks the program may hold (no malloc, no stdio), no signals, no thread creation.
 *   LIVEPATCH_PRE_APPLY(int hook(void)): once the payload is linked into the target, before any function is
 *     redirected; a non-zero return vetoes the apply (refused with that code, the payload's memory freed).
 *   LIVEPATCH_POST_APPLY(void hook(void)): once the payload is applied and recorded.
 *   LIVEPATCH_PRE_REVERT(int hook(void)): before any function is restored; a non-zero return vetoes the revert.
 *   LIVEPATCH_POST_REVERT(void hook(void)): once the payload is reverted and recorded.
 */
/* The typedef checks the hook's type: a wrong one fails to compile with "size of array
 * 'livepatch_hook_must_be_int_hook_void_N' is negative" (a C99-clean static assertion). */
#define LIVEPATCH_HOOK_(record_kind, hook, hook_type, type_check)                            \
    typedef char LIVEPATCH_CONCAT_(type_check, __COUNTER__)                                   \
        [__builtin_types_compatible_p(__typeof__(hook), hook_type) ? 1 : -1];                 \
    LIVEPATCH_RECORD_(record_kind, (hook), 0)

#define LIVEPATCH_PRE_APPLY(hook) \
    LIVEPATCH_HOOK_(LIVEPATCH_KIND_PRE_APPLY, hook, int(void), livepatch_hook_must_be_int_hook_void_)
#define LIVEPATCH_POST_APPLY(hook) \
    LIVEPATCH_HOOK_(LIVEPATCH_KIND_POST_APPLY, hook, void(void), livepatch_hook_must_be_void_hook_void_)
#define LIVEPATCH_PRE_REVERT(hook) \
    LIVEPATCH_HOOK_(LIVEPATCH_KIND_PRE_REVERT, hook, int(void), livepatch_hook_must_be_int_hook_void_)
#define LIVEPATCH_POST_REVERT(hook) \
    LIVEPATCH_HOOK_(LIVEPATCH_KIND_POST_REVERT, hook, void(void), livepatch_hook_must_be_void_hook_void_)

#endif /* LIVEPATCH_LIVEPATCH_H */
