/*
 * target.c — the process the stack-scan benchmark stops and scans.
 *
 *     target THREADS STACK_KB [LIFETIME_SECONDS [FRAMES]]
 *
 * THREADS threads each descend through descend() until about STACK_KB KiB of their stack is live (frames of
 * 256 bytes whose padding holds data, not code addresses), then sleep there in nanosleep, 1 ms at a time, as
 * blocked server threads do. The main thread prints "ready PID compute=ADDR", then calls compute() every
 * millisecond (the function the benchmark's payload replaces) and exits after LIFETIME_SECONDS (default 600)
 * in case the harness died. FRAMES, when given, sets the depth of descend() instead (STACK_KB then only sizes the
 * threads' stacks).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long frames;
static volatile int sink;

__attribute__((noipa)) int compute(int x) { return x * 3 + 1; }

__attribute__((noipa)) static void descend(long depth)
{
    volatile char pad[232];
    pad[0] = (char)depth;
    if (depth > 0) {
        descend(depth - 1);
    } else {
        struct timespec millisecond = { 0, 1000000 };
        for (;;)
            nanosleep(&millisecond, NULL);
    }
    sink = pad[0];
}

static void *sleeper(void *arg)
{
    (void)arg;
    descend(frames);
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 8;
    long stack_kb = argc > 2 ? atol(argv[2]) : 4;
    long lifetime = argc > 3 ? atol(argv[3]) : 600;
    pthread_attr_t attr;
    setvbuf(stdout, NULL, _IOLBF, 0);
    frames = argc > 4 ? atol(argv[4]) : stack_kb * 1024 / 256;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, (size_t)(stack_kb * 1024 * 2 + (1 << 20)));
    for (int i = 0; i < threads; i++) {
        pthread_t thread;
        if (pthread_create(&thread, &attr, sleeper, NULL) != 0)
            return 3;
    }
    usleep(50000);
    printf("ready %d compute=%p\n", getpid(), (void *)compute);
    for (long i = 0; i < lifetime * 1000; i++) {
        sink = compute((int)i);
        usleep(1000);
    }
    return 0;
}
