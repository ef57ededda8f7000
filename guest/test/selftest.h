/*
 * selftest.h - memory-manager self-tests chosen with selftest=NAME.
 *
 * Owns: the self-tests of the PMM, the page tables and the heap's page
 * cache, and their options.
 * Does not own: the layers under test (pmm.c, paging.c) or the test=
 * cases of main.c.
 *
 * Each test prints "selftest NAME: ok ..." and returns, or panics with
 * "selftest NAME: ..." (so the kernel exits with EXIT_PANIC).
 *   pmm              allocate every free frame until exhaustion (or at most
 *                    selftest-frames=N), checking each is managed RAM and
 *                    never handed out twice (a bit per frame in a tracking
 *                    bitmap allocated from the PMM); free them all; check
 *                    the counts against the memory map before and after.
 *   pmm-random       a deterministic xorshift sequence of selftest-steps=N
 *                    (default 20000) allocations and frees of single frames
 *                    and aligned contiguous runs, checking alignment,
 *                    overlap, contents and counts on every step.
 *   pmm-bench        selftest-pairs=N (default 10000) allocate+free pairs of
 *                    blocks of 2^selftest-order frames (default 0), with
 *                    selftest-held=H (default 100) held in a ring; for
 *                    bench/pmm.py, which counts the instructions.
 *   paging           map/unmap/protect patterns in a scratch area (4 KiB,
 *                    2 MiB and 1 GiB pages, splits), translations, write
 *                    protection and NX seen through real page faults, the
 *                    kernel's own mappings; empty tables freed at the end.
 *   heap-cache       fills the heap's page cache (large blocks allocated
 *                    and freed), takes every free frame with pmm_alloc,
 *                    then shows one more pmm_alloc drains the cache (the
 *                    PMM's shrinker) and succeeds; every frame accounted
 *                    for (free + heap pages + tables) before and after.
 *   heap-cache-watermark  releases more pages than heapcache= allows
 *                    (run it with heapcache=N, N < 128): the cache keeps
 *                    exactly N, the rest went back to the PMM.
 *   pmm-double-free  frees a frame twice: must panic in pmm_free.
 *   pmm-unmanaged    frees a frame of the kernel image: must panic.
 *   planted          only in builds with -DPLANT_BUG=N (planted.h):
 *                    exercises that deliberate bug for the monitor's
 *                    invariant checker, then checkpoints.
 * Call after mm_init. The tests leave the PMM and page tables as they
 * found them (planted excepted). A test that returns is followed by
 * checkpoint(CHECKPOINT_SELFTEST).
 */
#ifndef SELFTEST_H
#define SELFTEST_H

/* Runs the named test; panics for an unknown name. */
void selftest_run(const char *name);

#endif
