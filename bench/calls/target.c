/*
 * target.c — the process the call-overhead benchmark measures and patches
 * (bench/LivePatch.Bench/Calls/). Built with retpolines, as a hardened program
 * would be:
 *
 *     gcc -O2 -mindirect-branch=thunk -fcf-protection=none -I native/include target.c
 *
 * Every loop calls the same function, native_identity, through a different
 * kind of call, feeding each result into the next argument (a dependency chain,
 * so each iteration waits for the previous call to return):
 *
 *   retpoline  calls.identity(x) in C: gcc turns the indirect call into
 *              "call __x86_indirect_thunk_rax" (-mindirect-branch=thunk)
 *   indirect   the same C, in a function marked indirect_branch("keep"):
 *              a plain "call *calls(%rip)"
 *   direct     native_identity(x) in C: "call native_identity"
 *   inline     no call: "mov" from one register to another in asm, the floor
 *              of a loop of dependent iterations
 *   site       LP_CALL1(calls, identity, x): the one recorded call site of this
 *              program. gcc never rewrites an indirect call written in inline
 *              asm, so as built it is a plain "call *calls(%rip)" even here;
 *              the harness rewrites it into a direct call, then into the
 *              native patchlet (mov %rdi, %rax).
 *
 *     target [pin]     with "pin", first binds itself to the last CPU it may run on (the
 *                      harness, blocked on its answers, runs on the others)
 *
 * Protocol, one line each way on stdin / stdout:
 *   -> "ready PID native_identity=0xADDR cpu=N"   (N -1: not pinned)
 *   <- "run LOOP ITERATIONS"   -> "LOOP ns=N ticks=T x=X" (CLOCK_MONOTONIC ns and
 *                                 TSC ticks around the whole loop)
 *   <- "quit" or end of input  -> exits 0
 * An unknown request gets "error ..." and is otherwise ignored.
 */
#define _GNU_SOURCE
#include <livepatch/sites.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct call_ops {
    unsigned long (*identity)(unsigned long);
};

/* Global, and filled at start-up: gcc cannot prove the slot constant, so it keeps the C indirect calls indirect. */
struct call_ops calls;

__attribute__((noipa)) unsigned long native_identity(unsigned long x) { return x; }

__attribute__((noipa)) unsigned long loop_retpoline(unsigned long x, unsigned long n)
{
    for (unsigned long i = 0; i < n; i++)
        x = calls.identity(x);
    return x;
}

__attribute__((noipa, indirect_branch("keep"))) unsigned long loop_indirect(unsigned long x, unsigned long n)
{
    for (unsigned long i = 0; i < n; i++)
        x = calls.identity(x);
    return x;
}

__attribute__((noipa)) unsigned long loop_direct(unsigned long x, unsigned long n)
{
    for (unsigned long i = 0; i < n; i++)
        x = native_identity(x);
    return x;
}

__attribute__((noipa)) unsigned long loop_inline(unsigned long x, unsigned long n)
{
    for (unsigned long i = 0; i < n; i++)
        __asm__ __volatile__("mov %1, %0" : "=r"(x) : "r"(x));
    return x;
}

__attribute__((noipa)) unsigned long loop_site(unsigned long x, unsigned long n)
{
    for (unsigned long i = 0; i < n; i++)
        x = LP_CALL1(calls, identity, x);
    return x;
}

static const struct {
    const char *name;
    unsigned long (*loop)(unsigned long, unsigned long);
} loops[] = {
    { "retpoline", loop_retpoline },
    { "indirect", loop_indirect },
    { "direct", loop_direct },
    { "inline", loop_inline },
    { "site", loop_site },
};

static unsigned long long ticks(void)
{
    unsigned lo, hi;
    /* lfence: rdtsc must not start before the loop's last call has returned, nor the loop before rdtsc. */
    __asm__ __volatile__("lfence\n\trdtsc\n\tlfence" : "=a"(lo), "=d"(hi) : : "memory");
    return ((unsigned long long)hi << 32) | lo;
}

static unsigned long long nanoseconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (unsigned long long)now.tv_sec * 1000000000ull + (unsigned long long)now.tv_nsec;
}

static void run(const char *name, unsigned long iterations)
{
    for (size_t i = 0; i < sizeof loops / sizeof *loops; i++) {
        if (strcmp(loops[i].name, name) != 0)
            continue;
        unsigned long long t0 = nanoseconds(), c0 = ticks();
        unsigned long x = loops[i].loop(iterations, iterations);
        unsigned long long c1 = ticks(), t1 = nanoseconds();
        printf("%s ns=%llu ticks=%llu x=%lu\n", name, t1 - t0, c1 - c0, x);
        return;
    }
    printf("error unknown loop %s\n", name);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    int cpu = -1;
    if (argc > 1 && strcmp(argv[1], "pin") == 0) {
        cpu_set_t cpus;
        if (sched_getaffinity(0, sizeof cpus, &cpus) != 0) {
            perror("sched_getaffinity");
            return 1;
        }
        for (int i = 0; i < CPU_SETSIZE; i++)
            if (CPU_ISSET(i, &cpus))
                cpu = i;
        CPU_ZERO(&cpus);
        CPU_SET(cpu, &cpus);
        if (sched_setaffinity(0, sizeof cpus, &cpus) != 0) {
            perror("sched_setaffinity");
            return 1;
        }
    }
    calls.identity = native_identity; /* the ops table, chosen once at start-up */
    printf("ready %d native_identity=%p cpu=%d\n", getpid(), (void *)native_identity, cpu);
    char line[256], name[64];
    unsigned long iterations;
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "quit", 4) == 0)
            break;
        if (sscanf(line, "run %63s %lu", name, &iterations) == 2 && iterations > 0)
            run(name, iterations);
        else
            printf("error bad request %s", line);
    }
    return 0;
}
