/* The fix for the demo target: the full Gregorian rule. It calls the target's own divisible(). */
#include <livepatch/livepatch.h>

extern int divisible(int year, int by);

static int days_in_february_fixed(int year)
{
    int leap = divisible(year, 4) && (!divisible(year, 100) || divisible(year, 400));
    return leap ? 29 : 28;
}

LIVEPATCH_REPLACE("days_in_february", days_in_february_fixed);
