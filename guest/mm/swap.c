/*
 * swap.c - swapping user pages (see swap.h for the contracts and the
 * entry encoding).
 *
 * Owns: the slot counts and the next-fit slot cursor, the per-frame
 * records (who maps the frame, its place in the eviction list, the slot
 * the swap cache links it to), reclaim and swap-in, and swap_descriptor.
 * Does not own: the disk's protocol (dev/virtio_blk.c), page-table bits
 * (mm/paging.c), regions (mm/vmm.c).
 *
 * The eviction list holds the frames one entry maps, oldest mapping first.
 * The clock looks at the head: Accessed set, the bit is cleared and the
 * frame goes to the tail (its second chance); clear, the frame is evicted.
 * That is the clock of the textbooks, its hand the list's head (Corbato's
 * second chance; Linux's mm/vmscan.c ages its lists the same way). fifo
 * evicts the head whatever its bit; random any listed frame.
 *
 * A frame whose slot the swap cache links (it was read from that slot and
 * its entry's D bit is still clear) goes out without a write: the slot
 * already holds it. Every other evicted frame is written to a new slot
 * first, and unmapped before the write so that nothing changes it during.
 * Those writes go in clusters: consecutive slots, one request for up to
 * sw.cluster pages; a swap-in reads the next pages of a sequential run in
 * its own request (read-ahead), so a scan costs a request per cluster, not
 * per page.
 */
#include "mm/swap.h"

#include "boot/cmdline.h"
#include "dev/serial.h"
#include "dev/virtio_blk.h"
#include "heap/heap.h"
#include "lib/panic.h"
#include "lib/string.h"
#include "mm/frames.h"
#include "mm/pmm.h"
#include "mm/vmm.h"
#include "test/planted.h"

#define NIL 0xffffffffu
#define LOW_WATERMARK_MIN 4
#define SWAP_CLUSTER 32 /* pages in one write, and in one read with its read-ahead */

struct swap_descriptor swap_descriptor;

/* One per frame the PMM manages, indexed by pfn - base. */
struct frame_rec {
    struct address_space *as; /* NULL: not on the eviction list */
    vaddr_t va;
    uint32_t next, prev;
    uint32_t slot;            /* the swap cache's link, 0 for none */
    uint32_t reserved;
};

static struct {
    bool enabled;
    uint16_t *counts;
    uint64_t slots;
    uint64_t cursor;          /* next-fit: where the last free slot was found */
    uint64_t used;
    struct frame_rec *frames;
    pfn_t base;
    uint64_t nframes;
    uint32_t head, tail;      /* the eviction list */
    uint64_t listed;
    size_t limit;             /* user frames at most */
    size_t low, high;         /* reclaim starts below low free, stops at high */
    uint32_t cluster;         /* pages per write and per read at most (swap_cluster=) */
    enum swap_policy policy;
    uint64_t random;
    paddr_t header_frame;
} sw;

/* Pages unmapped for eviction whose write is not sent yet: consecutive slots from
 * first, written with one request (Linux's swap clusters, mm/swapfile.c). */
static struct {
    uint64_t first;
    uint32_t n;
    struct {
        struct address_space *as;
        vaddr_t va;
        uint32_t frame;
        uint64_t old; /* the present entry before, put back if the write fails */
    } page[SWAP_CLUSTER];
} batch;

/* ---- The monitor's hooks ------------------------------------------------- */

/* Called after a page went out (written: 1 if its data were written to
 * slot now, 0 if the slot already held them). The monitor hooks the entry;
 * the empty asm keeps the call. */
__attribute__((noinline, used)) void swap_note_out(paddr_t root, vaddr_t va, paddr_t pa,
                                                   uint64_t slot, paddr_t pte, uint64_t written)
{
    __asm__ volatile("" : : "r"(root), "r"(va), "r"(pa), "r"(slot), "r"(pte), "r"(written)
                     : "memory");
}

/* Called after a page came in from slot and is mapped at va by the entry at pte. */
__attribute__((noinline, used)) void swap_note_in(paddr_t root, vaddr_t va, paddr_t pa,
                                                  uint64_t slot, paddr_t pte)
{
    __asm__ volatile("" : : "r"(root), "r"(va), "r"(pa), "r"(slot), "r"(pte) : "memory");
}

/* ---- Slots ----------------------------------------------------------------- */

static void slot_get(uint64_t slot)
{
    if (slot == 0 || slot >= sw.slots || sw.counts[slot] == 0 ||
        sw.counts[slot] >= SWAP_MAX_COUNT)
        panic("swap: slot %lu cannot take another reference (count %u)", slot,
              slot < sw.slots ? sw.counts[slot] : 0);
    sw.counts[slot]++;
}

static void slot_put(uint64_t slot)
{
    if (slot == 0 || slot >= sw.slots || sw.counts[slot] == 0 ||
        sw.counts[slot] == SWAP_SLOT_BAD)
        panic("swap: slot %lu has no reference to drop", slot);
    if (--sw.counts[slot] == 0)
        sw.used--;
}

/* A free slot with count 1; 0 if the area is full. */
static uint64_t slot_alloc(void)
{
    for (uint64_t i = 0; i + 1 < sw.slots; i++) {
        uint64_t s = 1 + (sw.cursor + i) % (sw.slots - 1);

#if PLANT_BUG == 403 /* planted bug 403: the last slot handed out, one entry naming it, */
        s = 1 + (sw.cursor + sw.slots - 2 + i) % (sw.slots - 1); /* counts as free */
        if (sw.counts[s] <= 1) {
#else
        if (sw.counts[s] == 0) {
#endif
            sw.counts[s] = 1;
            sw.cursor = s;
            sw.used++;
            return s;
        }
    }
    return 0;
}

bool swap_entry_valid(uint64_t e)
{
    uint64_t slot = swap_slot_of(e);

    return sw.enabled && swap_is_entry(e) && slot != 0 && slot < sw.slots &&
           sw.counts[slot] != 0 && sw.counts[slot] != SWAP_SLOT_BAD;
}

void swap_entry_dup(uint64_t e)
{
    slot_get(swap_slot_of(e));
}

void swap_entry_free(uint64_t e)
{
    slot_put(swap_slot_of(e));
}

/* ---- Frame records and the eviction list ----------------------------------- */

static struct frame_rec *rec_of(paddr_t pa)
{
    pfn_t pfn = paddr_to_pfn(pa);

    if (pfn < sw.base || pfn - sw.base >= sw.nframes)
        panic("swap: frame 0x%lx is not the PMM's", pa);
    return &sw.frames[pfn - sw.base];
}

static paddr_t pa_of(uint32_t i)
{
    return pfn_to_paddr(sw.base + i);
}

static void unlist(uint32_t i)
{
    struct frame_rec *r = &sw.frames[i];

    if (r->as == NULL)
        return;
    if (r->prev != NIL)
        sw.frames[r->prev].next = r->next;
    else
        sw.head = r->next;
    if (r->next != NIL)
        sw.frames[r->next].prev = r->prev;
    else
        sw.tail = r->prev;
    r->as = NULL;
    sw.listed--;
}

static void list_tail(uint32_t i, struct address_space *as, vaddr_t va)
{
    struct frame_rec *r = &sw.frames[i];

    unlist(i);
    r->as = as;
    r->va = va;
    r->next = NIL;
    r->prev = sw.tail;
    if (sw.tail != NIL)
        sw.frames[sw.tail].next = i;
    else
        sw.head = i;
    sw.tail = i;
    sw.listed++;
}

static void unlink_cache(struct frame_rec *r)
{
    if (r->slot != 0) {
        slot_put(r->slot);
        r->slot = 0;
    }
}

void swap_frame_mapped(paddr_t pa, struct address_space *as, vaddr_t va)
{
    if (sw.frames != NULL)
        list_tail((uint32_t)(rec_of(pa) - sw.frames), as, va);
}

void swap_frame_dirtied(paddr_t pa)
{
    if (sw.frames != NULL)
        unlink_cache(rec_of(pa));
}

void swap_frame_freed(paddr_t pa)
{
    struct frame_rec *r;

    if (sw.frames == NULL)
        return;
    r = rec_of(pa);
    unlist((uint32_t)(r - sw.frames));
    unlink_cache(r);
}

void swap_space_gone(struct address_space *as)
{
    if (sw.frames == NULL)
        return;
    for (uint32_t i = sw.head; i != NIL;) {
        uint32_t next = sw.frames[i].next;

        if (sw.frames[i].as == as)
            unlist(i);
        i = next;
    }
}

/* ---- Eviction -------------------------------------------------------------- */

enum evict_result {
    EVICTED,       /* the frame is free */
    QUEUED,        /* unmapped, its write queued in the batch */
    SECOND_CHANCE, /* referenced: moved to the tail */
    SKIPPED,       /* not evictable now: off the list */
    FAILED,        /* no slot: stays */
};

/* The page's data are in slot now: the note for the monitor, and the frame goes. */
static void finish_out(struct address_space *as, vaddr_t va, uint32_t i, uint64_t slot,
                       uint64_t written)
{
    paddr_t pa = pa_of(i);

    as->rss_pages--;
    swap_note_out(vmm_root_paddr(as->root), va, pa, slot, vmm_user_entry_paddr(as->root, va),
                  written);
    uframe_put(pa);
}

/* The frame goes out without a write: its linked slot holds it. */
static enum evict_result drop_clean(struct frame_rec *r, uint32_t i)
{
    uint64_t slot = r->slot;
    struct address_space *as = r->as;
    vaddr_t va = r->va;

    slot_get(slot); /* the entry names it now */
    if (vmm_swap_out(as->root, va, pa_of(i), swap_entry(slot)) != VMM_OK)
        panic("swap: the entry of a listed frame changed under reclaim");
    swap_descriptor.clean_drops++;
    unlist(i);
    finish_out(as, va, i, slot, 0);
    return EVICTED;
}

/* Sends the batch's write; returns the frames freed (0 if the write failed: then every
 * page is mapped again and its slot retired). */
static uint64_t flush_batch(void)
{
    struct blk_request req = {.op = BLK_WRITE, .sector = batch.first * SWAP_SECTORS_PER_SLOT,
                              .nsegs = batch.n};
    uint32_t n = batch.n;
    int status;

    if (n == 0)
        return 0;
    for (uint32_t k = 0; k < n; k++)
        req.seg[k] = (struct blk_segment){pa_of(batch.page[k].frame), PAGE_SIZE};
    status = blk_submit(&req);
    if (status == BLK_OK)
        status = blk_wait(&req);
    batch.n = 0;
    swap_descriptor.write_requests++;
    for (uint32_t k = 0; k < n; k++) {
        uint64_t slot = batch.first + k;

        if (status != BLK_OK) {
            vmm_restore_leaf(batch.page[k].as->root, batch.page[k].va, batch.page[k].old);
            sw.counts[slot] = SWAP_SLOT_BAD; /* never handed out again */
            list_tail(batch.page[k].frame, batch.page[k].as, batch.page[k].va);
            continue;
        }
        swap_descriptor.pages_out++;
        swap_descriptor.bytes_written += PAGE_SIZE;
        finish_out(batch.page[k].as, batch.page[k].va, batch.page[k].frame, slot, 1);
    }
    if (status != BLK_OK) {
        swap_descriptor.io_errors++;
        kreport("swap: writing slots %lu-%lu failed: their %u pages stay in memory\n",
                batch.first, batch.first + n - 1, n);
        return 0;
    }
    return n;
}

/* A slot for the next page of the batch: the one after its last, or (the batch sent
 * first) a new start; 0 if the area is full. *freed counts what a flush freed. */
static uint64_t batch_slot(uint64_t *freed)
{
    uint64_t next = batch.first + batch.n;

    if (batch.n > 0 && batch.n < sw.cluster && next < sw.slots && sw.counts[next] == 0) {
        sw.counts[next] = 1;
        sw.cursor = next;
        sw.used++;
        return next;
    }
    *freed += flush_batch();
    batch.first = slot_alloc();
    return batch.first;
}

static enum evict_result write_out(struct frame_rec *r, uint32_t i, uint64_t *freed)
{
    pml4_t *root = r->as->root;
    uint64_t old = vmm_user_entry(root, r->va), slot, entry;

    unlink_cache(r);
    slot = batch_slot(freed);
    if (slot == 0)
        return FAILED;
    entry = swap_entry(slot);
#if PLANT_BUG == 404 /* planted bug 404: the entry names a slot past the area's end */
    entry = swap_entry(slot + sw.slots);
#endif
    if (vmm_swap_out(root, r->va, pa_of(i), entry) != VMM_OK)
        panic("swap: the entry of a listed frame changed under reclaim");
    batch.page[batch.n].as = r->as;
    batch.page[batch.n].va = r->va;
    batch.page[batch.n].frame = i;
    batch.page[batch.n].old = old;
    batch.n++;
    unlist(i);
    return QUEUED;
}

/* Never inlined: bench/swap.py times one step of the clock from its entry to its ret. */
__attribute__((noinline)) static enum evict_result evict(uint32_t i, bool second_chance,
                                                         uint64_t *freed)
{
    struct frame_rec *r = &sw.frames[i];
    enum vmm_reference ref;
    uint64_t e;

    swap_descriptor.scans++;
    if (uframe_refs(pa_of(i)) != 1) {
        unlist(i); /* shared: copy-on-write breaking or an unmap lists it again */
        return SKIPPED;
    }
    if (second_chance) {
        ref = vmm_test_and_clear_accessed(r->as->root, r->va, pa_of(i));
    } else {
        e = vmm_user_entry(r->as->root, r->va);
        ref = (e & 1) == 0 || (e & 0x000ffffffffff000ULL) != pa_of(i) ? VMM_REF_GONE
              : (e & (1u << 6))                                       ? VMM_REF_IDLE_DIRTY
                                                                      : VMM_REF_IDLE_CLEAN;
    }
    switch (ref) {
    case VMM_REF_GONE:
        unlist(i);
        return SKIPPED;
    case VMM_REF_ACCESSED:
        list_tail(i, r->as, r->va);
        return SECOND_CHANCE;
    case VMM_REF_IDLE_CLEAN:
        if (r->slot != 0)
            return drop_clean(r, i);
        return write_out(r, i, freed);
    case VMM_REF_IDLE_DIRTY:
#if PLANT_BUG == 401 /* planted bug 401: a dirty page with a linked slot goes out unwritten */
        if (r->slot != 0)
            return drop_clean(r, i);
#endif
        return write_out(r, i, freed);
    }
    return SKIPPED;
}

/* A listed frame at random: a random walk start, from the kernel's xorshift. */
static uint32_t random_frame(void)
{
    uint64_t steps;
    uint32_t i = sw.head;

    sw.random ^= sw.random << 13;
    sw.random ^= sw.random >> 7;
    sw.random ^= sw.random << 17;
    steps = sw.listed > 0 ? sw.random % (sw.listed < 64 ? sw.listed : 64) : 0;
    while (steps-- > 0 && sw.frames[i].next != NIL)
        i = sw.frames[i].next;
    return i;
}

/* Evicts frames until want are free (or nothing more can go); returns how many went.
 * Dirty pages queue in the batch, which is sent when full, when the next slot is taken,
 * and at the end: no page stays unmapped without its write done. */
static uint64_t reclaim(uint64_t want)
{
    /* Two passes over the list: every frame loses its Accessed bit in the first. */
    uint64_t budget = 2 * sw.listed + 2, freed = 0;

    while (freed + batch.n < want && sw.head != NIL && budget-- > 0) {
        uint32_t i = sw.policy == SWAP_POLICY_RANDOM ? random_frame() : sw.head;
        enum evict_result r = evict(i, sw.policy == SWAP_POLICY_CLOCK, &freed);

        if (r == EVICTED)
            freed++;
        else if (r == FAILED)
            break; /* the area is full */
    }
    return freed + flush_batch();
}

bool swap_reclaim_one(void)
{
    return sw.enabled && reclaim(1) > 0;
}

static size_t user_free(size_t user_frames)
{
    size_t by_limit = sw.limit > user_frames ? sw.limit - user_frames : 0;
    size_t by_pmm = pmm_free_count();

    return by_limit < by_pmm ? by_limit : by_pmm;
}

void swap_reclaim_if_low(size_t user_frames)
{
    size_t free = user_free(user_frames);

    if (!sw.enabled || free > sw.low)
        return;
    reclaim(sw.high - free);
}

size_t swap_user_limit(void)
{
    return sw.limit;
}

bool swap_enabled(void)
{
    return sw.enabled;
}

/* ---- Swap-in ----------------------------------------------------------------- */

/* The frame the swap cache links to slot, or 0. Linear in the listed frames: the
 * cache is consulted only for slots more than one entry names (after fork). */
static paddr_t cached_frame(uint64_t slot)
{
    if (sw.counts[slot] < 2)
        return 0;
    for (uint32_t i = 0; i < sw.nframes; i++) {
        if (sw.frames[i].slot == slot)
            return pa_of(i);
    }
    return 0;
}

/* The read-ahead window, in pages: it doubles (up to SWAP_CLUSTER) while each fault
 * lands just past the pages the last one read, and falls back to 1 on any other fault,
 * as Linux's readahead ramps up on a sequential stream and stays off for random ones. */
static struct {
    const struct address_space *as;
    vaddr_t next; /* the page after the last run read */
    uint32_t window;
} ra = {.window = 1};

static uint32_t readahead_window(const struct address_space *as, vaddr_t va)
{
    if (as == ra.as && va == ra.next)
        ra.window = ra.window * 2 < sw.cluster ? ra.window * 2 : sw.cluster;
    else
        ra.window = 1;
    return ra.window;
}

/* Pages to read with the one at va: it, then (up to the read-ahead window) each next
 * page below limit whose entry names the next slot, which no other entry names (so no
 * swap cache holds it). Sequential eviction leaves runs like that. Frames for them go
 * in pa[]; fewer if frames run out. */
static uint32_t read_run(struct address_space *as, vaddr_t va, vaddr_t limit, uint64_t slot,
                         paddr_t pa[SWAP_CLUSTER])
{
    uint32_t n = 1, window = readahead_window(as, va);

    while (n < window && va + n * PAGE_SIZE < limit && slot + n < sw.slots &&
           sw.counts[slot + n] == 1 &&
           vmm_user_entry(as->root, va + n * PAGE_SIZE) == swap_entry(slot + n)) {
        pa[n] = uframe_alloc(UFRAME_UNINIT);
        if (pa[n] == 0)
            break;
        n++;
    }
    ra.as = as;
    ra.next = va + n * PAGE_SIZE;
    return n;
}

static int read_slots(uint64_t slot, const paddr_t *pa, uint32_t n)
{
    struct blk_request req = {.op = BLK_READ, .nsegs = n};
    int status;

#if PLANT_BUG == 402 /* planted bug 402: swap-in reads the slot after the right one */
    slot = 1 + slot % (sw.slots - 1);
    req.nsegs = n = 1;
#endif
    req.sector = slot * SWAP_SECTORS_PER_SLOT;
    for (uint32_t k = 0; k < n; k++)
        req.seg[k] = (struct blk_segment){pa[k], PAGE_SIZE};
    swap_descriptor.read_requests++;
    status = blk_submit(&req);
    return status == BLK_OK ? blk_wait(&req) : status;
}

/* Maps the frame pa holding slot's page at va, in place of the entry naming it. */
static void map_in(struct address_space *as, vaddr_t va, paddr_t pa, uint64_t slot,
                   bool write, uint32_t (*flags_for)(const void *region, paddr_t pa),
                   const void *region)
{
    if (vmm_map(as->root, va, pa, 1, flags_for(region, pa)) != VMM_OK)
        panic("swap_in: mapping 0x%lx failed", va); /* its table exists: cannot fail */
    slot_put(slot); /* the entry no longer names it */
    if (write && uframe_refs(pa) == 1)
        unlink_cache(rec_of(pa)); /* about to be written: the slot will be stale */
    if (uframe_refs(pa) == 1)
        swap_frame_mapped(pa, as, va);
    as->rss_pages++;
    if (as->rss_pages > as->peak_rss_pages)
        as->peak_rss_pages = as->rss_pages;
    swap_note_in(vmm_root_paddr(as->root), va, pa, slot, vmm_user_entry_paddr(as->root, va));
}

int swap_in(struct address_space *as, vaddr_t va, vaddr_t limit, uint64_t entry, bool write,
            uint32_t (*flags_for)(const void *region, paddr_t pa), const void *region,
            paddr_t *pa_out)
{
    uint64_t slot = swap_slot_of(entry);
    paddr_t pa[SWAP_CLUSTER];
    uint32_t n = 1;

    if (!swap_entry_valid(entry))
        return SWAP_IN_BAD_ENTRY;
    pa[0] = cached_frame(slot);
    if (pa[0] != 0) {
        uframe_get(pa[0]);
        swap_descriptor.cache_hits++;
    } else {
        pa[0] = uframe_alloc(UFRAME_UNINIT);
        if (pa[0] == 0)
            return SWAP_IN_NO_MEMORY;
        n = read_run(as, va, limit, slot, pa);
        if (read_slots(slot, pa, n) != BLK_OK) {
            for (uint32_t k = 0; k < n; k++)
                uframe_put(pa[k]);
            swap_descriptor.io_errors++;
            return SWAP_IN_IO_ERROR;
        }
        for (uint32_t k = 0; k < n; k++) {
            rec_of(pa[k])->slot = (uint32_t)(slot + k); /* the cache's reference: */
            slot_get(slot + k);                         /* the entry's moves */
        }
        swap_descriptor.pages_in += n;
        swap_descriptor.readahead += n - 1;
        swap_descriptor.bytes_read += (uint64_t)n * PAGE_SIZE;
    }
    if (vmm_user_entry(as->root, va) != entry)
        panic("swap_in: the entry at 0x%lx changed during the read", va);
    map_in(as, va, pa[0], slot, write, flags_for, region);
    /* The pages read ahead are mapped unreferenced (Accessed clear): the clock takes
     * them back first, without a write, if nobody touches them. */
    for (uint32_t k = 1; k < n; k++)
        map_in(as, va + k * PAGE_SIZE, pa[k], slot + k, false, flags_for, region);
    *pa_out = pa[0];
    return SWAP_IN_OK;
}

/* ---- Set-up --------------------------------------------------------------------- */

static size_t parse_size(const char *text)
{
    size_t v = 0;

    for (; *text >= '0' && *text <= '9'; text++)
        v = v * 10 + (size_t)(*text - '0');
    if (*text == 'K' || *text == 'k')
        v <<= 10;
    else if (*text == 'M' || *text == 'm')
        v <<= 20;
    else if (*text == 'G' || *text == 'g')
        v <<= 30;
    return v;
}

static void read_options(void)
{
    char word[32];

    sw.limit = pmm_total_count();
    if (cmdline_get("user_mem", word, sizeof(word)) > 0) {
        size_t frames = parse_size(word) / PAGE_SIZE;

        if (frames < 16)
            panic("swap_init: user_mem=%s leaves fewer than 16 frames", word);
        if (frames < sw.limit)
            sw.limit = frames;
    }
    sw.policy = SWAP_POLICY_CLOCK;
    if (cmdline_get("swap_policy", word, sizeof(word)) > 0) {
        if (strcmp(word, "fifo") == 0)
            sw.policy = SWAP_POLICY_FIFO;
        else if (strcmp(word, "random") == 0)
            sw.policy = SWAP_POLICY_RANDOM;
        else if (strcmp(word, "clock") != 0)
            panic("swap_init: swap_policy=%s: clock, fifo or random", word);
    }
    sw.cluster = SWAP_CLUSTER;
    if (cmdline_get("swap_cluster", word, sizeof(word)) > 0) {
        sw.cluster = (uint32_t)parse_size(word);
        if (sw.cluster < 1 || sw.cluster > SWAP_CLUSTER)
            panic("swap_init: swap_cluster=%s: 1 to %u pages", word, SWAP_CLUSTER);
    }
    sw.low = sw.limit / 64 > LOW_WATERMARK_MIN ? sw.limit / 64 : LOW_WATERMARK_MIN;
    /* Reclaim frees a whole write cluster at once where the limit allows it. */
    sw.high = sw.low + (sw.limit / 8 < sw.cluster ? sw.limit / 8 : sw.cluster);
    if (sw.high < 2 * sw.low)
        sw.high = 2 * sw.low;
    sw.random = 0x9e3779b97f4a7c15ULL;
}

/* mkswap and swapon: the header in slot 0, every other slot free. */
static bool format_area(void)
{
    struct swap_header *h;

    sw.slots = blk_capacity() / SWAP_SECTORS_PER_SLOT;
    if (sw.slots < 2 || sw.slots >= (1ull << SWAP_SLOT_BITS))
        return false;
    sw.counts = kcalloc(sw.slots, sizeof(*sw.counts));
    sw.header_frame = pmm_alloc();
    if (sw.counts == NULL || sw.header_frame == 0)
        panic("swap_init: no memory for %lu slot counts", sw.slots);
    h = phys_to_virt(sw.header_frame);
    memset(h, 0, PAGE_SIZE);
    memcpy(h->magic, SWAP_MAGIC, sizeof(h->magic));
    h->version = 1;
    h->page_size = PAGE_SIZE;
    h->slots = sw.slots;
    if (blk_io(BLK_WRITE, 0, sw.header_frame, PAGE_SIZE) != BLK_OK)
        return false;
    pmm_free(sw.header_frame);
    sw.header_frame = 0;
    return true;
}

void swap_init(void)
{
    read_options();
    swap_descriptor.user_limit = (uint32_t)sw.limit;
    if (blk_init() != BLK_OK)
        return;
    if (!format_area()) {
        kreport("swap: the disk (%lu sectors) holds no swap area\n", blk_capacity());
        return;
    }
    sw.base = pmm_descriptor.base_pfn;
    sw.nframes = pmm_descriptor.frames;
    sw.frames = kcalloc(sw.nframes, sizeof(*sw.frames));
    if (sw.frames == NULL)
        panic("swap_init: no memory for %lu frame records", sw.nframes);
    sw.head = sw.tail = NIL;
    sw.enabled = true;
    swap_descriptor = (struct swap_descriptor){
        .magic = SWAP_DESCRIPTOR_MAGIC, .version = 2, .pte_mark = SWAP_PTE_MARK,
        .slot_shift = SWAP_SLOT_SHIFT, .slot_bits = SWAP_SLOT_BITS, .slots = sw.slots,
        .counts = (vaddr_t)sw.counts, .policy = sw.policy, .user_limit = (uint32_t)sw.limit,
        .sectors_per_slot = SWAP_SECTORS_PER_SLOT};
    kprintf("swap: %lu slots, user frames at most %lu, policy %u, clusters of %u\n",
            sw.slots - 1, sw.limit, sw.policy, sw.cluster);
}

uint64_t swap_slots_in_use(void)
{
    return sw.used;
}

void swap_report(void)
{
    if (!sw.enabled)
        return;
    kprintf("swap: %lu pages out, %lu in, %lu dropped clean, %lu cache hits, %lu scans, "
            "%lu slots in use\n",
            swap_descriptor.pages_out, swap_descriptor.pages_in, swap_descriptor.clean_drops,
            swap_descriptor.cache_hits, swap_descriptor.scans, sw.used);
}
