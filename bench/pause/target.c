/*
 * target.c — the process the pause benchmark patches.
 *
 *     target THREADS SHM_PATH [LIFETIME_SECONDS]
 *
 * THREADS threads spin calling compute(); after every call each takes a
 * CLOCK_MONOTONIC timestamp (vDSO) and records, in the shared-memory file
 * SHM_PATH (created by the harness, layout below), two stalls:
 *   - its own longest gap between iterations (includes ordinary scheduling:
 *     with more busy threads than CPUs a thread waits whole time slices);
 *   - the longest interval in which NO thread of the process made progress,
 *     measured through one process-wide "last progress" timestamp that only
 *     moves forward. A stop-the-world shows up here and nowhere else is it
 *     isolated from time slicing: this is the pause.
 * The harness starts a measurement window by writing window_start (same clock)
 * and then incrementing epoch; each thread zeroes its own maxima when it sees
 * a new epoch and clips every gap to the window, so a slot is only ever written
 * by its own thread. The main thread prints the ready line, then only sleeps
 * and exits after LIFETIME_SECONDS (default 600) in case the harness died.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAUSE_MAGIC 0x3145535541504c4cull /* "LLPAUSE1" */
#define SLOTS_OFFSET 256

/* Offsets are part of the contract with bench/LivePatch.Bench/PauseSharedMemory.cs. */
struct pause_header {
    uint64_t magic;          /* 0: PAUSE_MAGIC, written by the target when ready */
    uint32_t threads;        /* 8: number of busy threads (= slots) */
    uint32_t pad0;
    uint64_t pad1[6];
    uint64_t epoch;          /* 64: written by the harness after window_start */
    uint64_t window_start;   /* 72: CLOCK_MONOTONIC ns, written by the harness */
    uint64_t pad2[6];
    uint64_t last_any;       /* 128: last progress by any thread, ns; only moves forward */
    uint64_t pad3[15];
};

struct pause_slot {          /* one 64-byte line per thread, at SLOTS_OFFSET + 64 * i */
    uint64_t epoch;          /* 0: the window the two maxima below belong to */
    uint64_t last;           /* 8: this thread's last timestamp, ns */
    uint64_t max_gap;        /* 16: this thread's longest gap in the window, ns */
    uint64_t max_none;       /* 24: longest no-progress interval this thread closed, ns */
    uint64_t iterations;     /* 32 */
    uint64_t pad[3];
};

_Static_assert(sizeof(struct pause_header) == SLOTS_OFFSET, "header layout");
_Static_assert(sizeof(struct pause_slot) == 64, "slot layout");

static struct pause_header *header;
static struct pause_slot *slots;
volatile int sink;

__attribute__((noipa)) int compute(int x)
{
    unsigned v = (unsigned)x;
    v ^= v >> 7;
    v *= 2654435761u;
    v ^= v >> 13;
    return (int)(v & 0xffff);
}

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *busy(void *argument)
{
    struct pause_slot *slot = &slots[(uintptr_t)argument];
    uint64_t epoch = 0, window = 0, last = now_ns();
    int i = 0;
    for (;;) {
        sink = compute(i++);
        uint64_t now = now_ns();

        uint64_t current = __atomic_load_n(&header->epoch, __ATOMIC_ACQUIRE);
        if (current != epoch) {
            epoch = current;
            window = __atomic_load_n(&header->window_start, __ATOMIC_RELAXED);
            __atomic_store_n(&slot->max_gap, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&slot->max_none, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&slot->epoch, epoch, __ATOMIC_RELEASE);
        }

        uint64_t start = last > window ? last : window;
        if (now > start && now - start > slot->max_gap)
            __atomic_store_n(&slot->max_gap, now - start, __ATOMIC_RELAXED);
        last = now;
        __atomic_store_n(&slot->last, now, __ATOMIC_RELEASE);
        __atomic_store_n(&slot->iterations, slot->iterations + 1, __ATOMIC_RELAXED);

        /* A thread preempted between its clock read and here holds an old "now":
         * it must not move last_any back, hence compare-and-swap to the maximum. */
        uint64_t previous = __atomic_load_n(&header->last_any, __ATOMIC_RELAXED);
        while (now > previous) {
            if (__atomic_compare_exchange_n(&header->last_any, &previous, now, 1,
                                            __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
                uint64_t from = previous > window ? previous : window;
                if (now > from && now - from > slot->max_none)
                    __atomic_store_n(&slot->max_none, now - from, __ATOMIC_RELAXED);
                break;
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s THREADS SHM_PATH [LIFETIME_SECONDS]\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[1]);
    int lifetime = argc > 3 ? atoi(argv[3]) : 600;
    if (threads < 1 || threads > 4096) {
        fprintf(stderr, "target: bad thread count %s\n", argv[1]);
        return 2;
    }
    size_t size = SLOTS_OFFSET + (size_t)threads * sizeof(struct pause_slot);
    int fd = open(argv[2], O_RDWR);
    if (fd < 0 || ftruncate(fd, (off_t)size) != 0) {
        perror(argv[2]);
        return 1;
    }
    void *memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (memory == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    close(fd);
    header = memory;
    slots = (struct pause_slot *)((char *)memory + SLOTS_OFFSET);
    header->threads = (uint32_t)threads;
    header->last_any = now_ns();

    for (int t = 0; t < threads; t++) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, busy, (void *)(uintptr_t)t) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    __atomic_store_n(&header->magic, PAUSE_MAGIC, __ATOMIC_RELEASE);
    printf("ready %d compute=%p threads=%d now=%llu\n", (int)getpid(), (void *)compute, threads,
           (unsigned long long)now_ns());
    fflush(stdout);
    sleep((unsigned)lifetime);
    fprintf(stderr, "target: lifetime of %d s is over, exiting\n", lifetime);
    return 0;
}
