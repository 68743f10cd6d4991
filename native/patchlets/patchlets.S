# Native patchlets: the inline forms of well-known functions, copied over a call
# site whose ops slot holds that function (LivePatch.Sites.Patchlet, the native
# call-site backend). Assembled by GNU as when the LivePatch project builds and
# embedded in the library; docs/sites.md describes the format.
#
# Each patchlet lp_native_X is the inline form of a program's function native_X:
#   lp_native_X_start / lp_native_X_end   global labels around its instructions
#   lp_native_X_clobbers                  absolute symbol: the registers it changes,
#                                         one bit per register in encoding order
#                                         (rax 0x1, rcx 0x2, rdx 0x4, ... r15 0x8000)
# A patchlet runs in place of "call native_X": arguments in rdi, rsi, rdx, rcx,
# result in rax, flags free. It must not call, return, branch out of itself or
# address memory relative to rip, and must carry no relocations.

    .set RAX, 0x0001
    .set RCX, 0x0002
    .set RDX, 0x0004

    .text

# unsigned long native_rdtsc(void): the time-stamp counter as one 64-bit value.
    .globl lp_native_rdtsc_start, lp_native_rdtsc_end, lp_native_rdtsc_clobbers
    .set lp_native_rdtsc_clobbers, RAX | RDX
lp_native_rdtsc_start:
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
lp_native_rdtsc_end:

# unsigned long native_rdtscp(void): the same, ordered after earlier loads (rdtscp also writes rcx).
    .globl lp_native_rdtscp_start, lp_native_rdtscp_end, lp_native_rdtscp_clobbers
    .set lp_native_rdtscp_clobbers, RAX | RCX | RDX
lp_native_rdtscp_start:
    rdtscp
    shl $32, %rdx
    or %rdx, %rax
lp_native_rdtscp_end:

# unsigned long native_identity(unsigned long x): returns its first argument.
    .globl lp_native_identity_start, lp_native_identity_end, lp_native_identity_clobbers
    .set lp_native_identity_clobbers, RAX
lp_native_identity_start:
    mov %rdi, %rax
lp_native_identity_end:

# unsigned long native_zero(void): returns 0.
    .globl lp_native_zero_start, lp_native_zero_end, lp_native_zero_clobbers
    .set lp_native_zero_clobbers, RAX
lp_native_zero_start:
    xor %eax, %eax
lp_native_zero_end:

# void native_pause(void): the spin-wait hint of a busy loop (cpu_relax).
    .globl lp_native_pause_start, lp_native_pause_end, lp_native_pause_clobbers
    .set lp_native_pause_clobbers, 0
lp_native_pause_start:
    pause
lp_native_pause_end:

    .section .note.GNU-stack, "", @progbits
