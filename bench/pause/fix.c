/*
 * fix.c — the payload of the pause benchmark: replaces the target's compute()
 * with a function of the same shape. What it returns does not matter; the
 * benchmark measures how long the target's threads are held, not the result.
 *
 *     gcc -c -O2 -fPIC -ffunction-sections -I native/include bench/pause/fix.c -o fix.o
 */
#include <livepatch/livepatch.h>

static int compute_fixed(int x)
{
    unsigned v = (unsigned)x;
    v ^= v >> 9;
    v *= 2246822519u;
    v ^= v >> 15;
    return (int)(v & 0xffff);
}

LIVEPATCH_REPLACE("compute", compute_fixed);
