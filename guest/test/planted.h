/*
 * planted.h - the planted bugs: deliberate bugs a test build switches on,
 * so that the tests can show each checker catches its kind of bug.
 *
 * Owns: the list of planted bugs and PLANT_BUG's default (0, the correct
 * kernel). Every file that holds a planted bug includes this header, and
 * each bug sits under an #if on PLANT_BUG marked "planted bug N".
 * Does not own: the bugs themselves (they live where they would be real
 * bugs) or the checkers that catch them.
 *
 * A build with -DPLANT_BUG=N (emu.build.build_guest(defines=...)) has
 * exactly one of these bugs. Numbers never change: tests build by number.
 *
 * Page tables and the PMM, for the monitor's invariant checker
 * (emu/checker.py); selftest=planted (test/selftest.c) exercises each
 * before a checkpoint:
 *   1 mm/paging.c maps the kernel's data and bss writable AND executable
 *   2 mm/paging.c maps the kernel's rodata user-accessible
 *   3 mm/paging.c unmaps without invlpg; selftest=planted then reads the
 *     page
 *   4 mm/pmm.c accepts frees of frames it does not manage;
 *     selftest=planted frees a RESERVED frame, which the PMM will hand out
 *   5 mm/paging.c frees an emptied page table twice (pmm_free panics)
 *   6 selftest=planted frees a frame that is still mapped (use after free)
 *   7 mm/paging.c frees an emptied page table but leaves its parent entry
 *
 * The heaps, for their own checks (heapdebug=1, heap_check) and the
 * monitor's heap checker (emu/heapcheck.py); a trace replay (replay=)
 * exercises them:
 *   101 heap/list.c coalesces a freed block with the previous block
 *       first, then merges the next block into a stale header: blocks
 *       still in use are handed out again
 *   102 heap/list.c splits off a remainder of a bare header, too small
 *       for a free block's links
 *   103 heap/slab.h tests a freed object's bitmap bit but never clears
 *       it, so the bitmap disagrees with the slab's free count
 *   104 heap/buddy.c takes the block to the right as the buddy, buddy or
 *       not, so free buddies stay apart
 *
 * Failure paths, for fault-injection campaigns (emu campaign):
 *   201 test/replay.c stamps a large block's first byte before it checks
 *       that kmalloc returned one: an unchecked allocation on one path
 *
 * User address spaces, for the monitor's process rules (emu/monitor/checks/,
 * PROCESS_RULES); any program run with the checker exercises them:
 *   301 mm/vmm.c unmaps user pages without dropping their frames' references:
 *       the frames of an exited process stay allocated (a leak)
 *   302 mm/vmm.c fork leaves private pages writable in parent and child:
 *       copy-on-write broken, one frame writable in two address spaces
 *   303 mm/vmm.c fork shares private pages without counting the child's
 *       references: reference counts disagree with the page tables
 *   304 proc/proc.c an exiting process keeps its address space
 *   305 mm/vmm.c a read of fresh anonymous memory maps the kernel's zero page
 *       (a frame of the kernel image), uncounted and writable if the region is
 *   306 mm/vmm.c munmap (and every unmap of a range: mmap over a mapping,
 *       mremap) leaves the last page of a range longer than a page mapped
 *       after its region is gone
 *
 * Swapping, for the monitor's swap checker (emu/monitor/swapcheck.py; a
 * program larger than user_mem= with a swap disk exercises them):
 *   401 mm/swap.c evicts a dirty page whose slot the swap cache links
 *       without writing it: the slot keeps older data (DIRTY_DROPPED)
 *   402 mm/swap.c swap-in reads the slot after the right one
 *       (SWAP_CONTENT)
 *   403 mm/swap.c's slot allocator takes a slot that one swap entry
 *       still names for free: a new page overwrites it (SLOT_REUSED)
 *   404 mm/swap.c writes swap entries naming a slot past the area's end
 *       (SWAP_ENTRY_INVALID)
 */
#ifndef PLANTED_H
#define PLANTED_H

#ifndef PLANT_BUG
#define PLANT_BUG 0
#endif

#endif
