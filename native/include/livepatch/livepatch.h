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

/* Record kinds (the "kind" field). The loader refuses the reserved ones with
 * "not supported yet". */
#define LIVEPATCH_KIND_REPLACE          1u /* a = old name ("name" or "module!name"), b = new function */
#define LIVEPATCH_KIND_ORIGINAL         2u /* reserved: pointer that will receive the old function */
#define LIVEPATCH_KIND_DEPENDS          3u /* a = name of a payload that must be applied first */
#define LIVEPATCH_KIND_TARGET_BUILD_ID  4u /* a = module name, b = expected build-id in hex */
#define LIVEPATCH_KIND_PRE_APPLY        5u /* reserved: hook run before apply */
#define LIVEPATCH_KIND_POST_APPLY       6u /* reserved: hook run after apply */
#define LIVEPATCH_KIND_PRE_REVERT       7u /* reserved: hook run before revert */
#define LIVEPATCH_KIND_POST_REVERT      8u /* reserved: hook run after revert */

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

#endif /* LIVEPATCH_LIVEPATCH_H */
