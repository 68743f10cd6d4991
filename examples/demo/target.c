/* The demo target: a "service" whose worker threads keep asking how many days February has.
   The bug: days_in_february forgets that century years are leap years only when divisible by 400,
   so 1900 gets 29 days. The payload fix.c corrects it while the service runs.
   Usage: target THREADS — prints "ready PID" once, then every 200 ms what the workers computed. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static volatile int answers[3];
static const int years[3] = {1900, 2000, 2024};
static long served;

__attribute__((noipa)) int divisible(int year, int by) { return year % by == 0; }

__attribute__((noipa)) int days_in_february(int year)
{
    return divisible(year, 4) ? 29 : 28; /* bug: 1900 is not a leap year */
}

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        for (int i = 0; i < 3; i++)
            answers[i] = days_in_february(years[i]);
        __atomic_add_fetch(&served, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; i < threads; i++) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, worker, NULL) != 0)
            return 1;
    }
    printf("ready %d\n", getpid());
    for (;;) {
        usleep(200 * 1000);
        printf("February has %d days in 1900, %d in 2000, %d in 2024 (%ld requests served)\n",
               answers[0], answers[1], answers[2], served);
    }
}
