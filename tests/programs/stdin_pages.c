/* Reads stdin to its end, then touches one page of its bss per byte read (at most 64):
 * its page faults, not only its output, depend on its input. Prints the byte count. */
#include <stdio.h>
#include <unistd.h>

#define MAX_PAGES 64

static char pages[MAX_PAGES][4096];

int main(void)
{
    char buffer[256];
    long total = 0;
    ssize_t got;

    while ((got = read(0, buffer, sizeof(buffer))) > 0)
        total += got;
    for (long page = 0; page < total && page < MAX_PAGES; page++)
        pages[page][0] = 1;
    printf("read %ld bytes\n", total);
    return 0;
}
