/*
 * random.h - the kernel's deterministic random numbers: getrandom(2) and
 * AT_RANDOM, from one generator seeded by the command line's seed=N
 * (default 0), so a run is reproducible to the byte.
 *
 * Owns: the generator (SplitMix64, Steele, Lea and Flood 2014) and its
 * state. Does not own: who asks.
 */
#ifndef RANDOM_H
#define RANDOM_H

#include "lib/types.h"

void random_seed(uint64_t seed);
void random_fill(void *dst, size_t n);

#endif
