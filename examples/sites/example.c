/*
 * example.c — one program using every macro of <livepatch/sites.h>. Built as is, it runs the code written
 * first at each site; `livepatch run --alternatives -- ./example` or a running process's `livepatch sites`,
 * `callsites` and `key` rewrite the sites for this CPU and situation. docs/sites.md walks through it.
 *
 *   usage: example [ROUNDS [THREADS]]    ROUNDS 0 runs until killed; THREADS extra counting threads
 *
 * Each round prints one line:  round 1: clz(1000)=22 path=avx2 counted=12 ticks=+2080 traced=0
 */
#define _DEFAULT_SOURCE /* usleep under -std=c11 */
#include <livepatch/sites.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* LP_ALTERNATIVE: count leading zeros with bsr (any x86-64), or lzcnt where the CPU has it. */
static unsigned clz(unsigned x)
{
    unsigned r;
    __asm__ __volatile__(LP_ALTERNATIVE("bsr %1, %0\n\txor $31, %0", "lzcnt %1, %0", LP_FEATURE_LZCNT) : "=r"(r) : "r"(x) : "cc");
    return r;
}

/* LP_ALTERNATIVE_2: which implementation to dispatch to, chosen once for the CPU (the last matching entry wins). */
static const char *path(void)
{
    unsigned level;
    __asm__ __volatile__(LP_ALTERNATIVE_2("mov $0, %0", "mov $1, %0", LP_FEATURE_SSE42, "mov $2, %0", LP_FEATURE_AVX2) : "=r"(level));
    static const char *const names[] = {"generic", "sse4.2", "avx2"};
    return names[level];
}

/* LP_LOCK_PREFIX: an atomic increment, which needs its lock only while several threads can run at once. */
static volatile unsigned long counted;

static void count(void)
{
    __asm__ __volatile__(LP_LOCK_PREFIX "incq %0" : "+m"(counted));
}

/* LP_CALLSITE (through LP_CALL0/LP_CALL1): calls through an ops table, as the kernel's paravirt ops. */
__attribute__((noipa)) unsigned long native_rdtsc(void)
{
    unsigned lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return ((unsigned long)hi << 32) | lo;
}

__attribute__((noipa)) void no_trace(unsigned long value)
{
    (void)value;
}

static struct clock_ops {
    unsigned long (*now)(void);
    void (*trace)(unsigned long);
} clock_ops = {native_rdtsc, no_trace};

/* LP_STATIC_BRANCH: a 5-byte NOP until `livepatch key PID tracing on` makes it a jump. */
static unsigned long traced;

static void maybe_trace(unsigned long value)
{
    if (LP_STATIC_BRANCH(tracing))
        traced += value != 0;
}

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        count();
        usleep(100);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    long rounds = argc > 1 ? atol(argv[1]) : 0;
    int threads = argc > 2 ? atoi(argv[2]) : 0;
    for (int i = 0; i < threads; i++) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, worker, NULL) != 0)
            return 1;
    }
    printf("ready %d\n", getpid());
    for (long round = 1; rounds == 0 || round <= rounds; round++) {
        unsigned long start = LP_CALL0(clock_ops, now);
        for (int i = 0; i < 10; i++)
            count();
        LP_CALL1(clock_ops, trace, start);
        maybe_trace(start);
        unsigned long ticks = LP_CALL0(clock_ops, now) - start;
        printf("round %ld: clz(1000)=%u path=%s counted=%lu ticks=+%lu traced=%lu\n", round, clz(1000), path(), counted, ticks, traced);
        usleep(200000);
    }
    return 0;
}
