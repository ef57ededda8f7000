/* mmap, munmap and mprotect semantics, observed without addresses: offsets inside one
 * reserved arena, mincore residency, contents, errno values, and which pages a probe can
 * read or write (a probe through a pipe: EFAULT instead of a crash). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096
#define PAGES 32

static char *arena;
static int probe[2];

/* r = readable, w = writable, per page of the arena. */
static void access_map(const char *what)
{
    char line[PAGES + 1], byte;

    for (int i = 0; i < PAGES; i++) {
        char *p = arena + i * PAGE;
        int readable = write(probe[1], p, 1) == 1;
        int writable = 0;

        if (readable) {
            read(probe[0], &byte, 1);
            writable = write(probe[1], p, 1) == 1 && read(probe[0], p, 1) == 1;
        }
        line[i] = writable ? 'w' : readable ? 'r' : '.';
    }
    line[PAGES] = 0;
    printf("%-28s %s\n", what, line);
}

static void residency(const char *what)
{
    unsigned char vec[PAGES];
    char line[PAGES + 1];
    int rc = mincore(arena, PAGES * PAGE, vec);

    for (int i = 0; i < PAGES; i++)
        line[i] = rc != 0 ? '?' : (vec[i] & 1) ? '1' : '0';
    line[PAGES] = 0;
    printf("%-28s %s rc=%d errno=%d\n", what, line, rc, rc ? errno : 0);
}

static void result(const char *what, long rc)
{
    printf("%-28s rc=%ld errno=%d\n", what, rc < 0 ? -1 : rc == 0 ? 0 : 1, rc < 0 ? errno : 0);
}

int main(void)
{
    pipe(probe);
    arena = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    residency("fresh");
    for (int i = 0; i < PAGES; i += 2)
        arena[i * PAGE] = (char)i;
    residency("even pages touched");
    access_map("all rw");
    result("munmap hole 4-7", munmap(arena + 4 * PAGE, 4 * PAGE));
    access_map("hole 4-7");
    residency("hole (ENOMEM)");
    result("mprotect 10-11 read", mprotect(arena + 10 * PAGE, 2 * PAGE, PROT_READ));
    result("mprotect 12 none", mprotect(arena + 12 * PAGE, PAGE, PROT_NONE));
    access_map("split by mprotect");
    result("mprotect over the hole", mprotect(arena + 2 * PAGE, 4 * PAGE, PROT_READ));
    access_map("prefix changed, then ENOMEM");
    result("mprotect 10-12 rw again", mprotect(arena + 10 * PAGE, 3 * PAGE, PROT_READ | PROT_WRITE));
    printf("page 10 kept %d, page 12 kept %d\n", arena[10 * PAGE], arena[12 * PAGE]);
    char *fixed = mmap(arena + 14 * PAGE, 3 * PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    printf("MAP_FIXED lands at offset %ld\n", (long)(fixed - arena) / PAGE);
    printf("replaced page 14 reads %d\n", arena[14 * PAGE]);
    access_map("fixed ro over 14-16");
    char *noreplace = mmap(arena + 20 * PAGE, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    printf("NOREPLACE over a mapping: %s errno=%d\n", noreplace == MAP_FAILED ? "failed" : "mapped", errno);
    char *filled = mmap(arena + 5 * PAGE, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    printf("NOREPLACE into the hole at %ld\n", (long)(filled - arena) / PAGE);
    char *hint = mmap(arena + 6 * PAGE, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("free hint taken: %d\n", hint == arena + 6 * PAGE);
    access_map("after fills");
    result("mmap length 0", (long)mmap(NULL, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    result("mmap bad type", (long)mmap(NULL, PAGE, PROT_READ, MAP_ANONYMOUS, -1, 0));
    result("munmap unaligned", munmap(arena + 1, PAGE));
    result("mprotect unaligned", mprotect(arena + 1, PAGE, PROT_READ));
    result("mprotect unmapped", mprotect(arena + 4 * PAGE, PAGE, PROT_READ));
    char *pop = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    unsigned char vec[4];
    mincore(pop, 4 * PAGE, vec);
    printf("MAP_POPULATE resident %d%d%d%d\n", vec[0] & 1, vec[1] & 1, vec[2] & 1, vec[3] & 1);
    result("munmap everything", munmap(arena, PAGES * PAGE));
    access_map("gone");
    return 0;
}
