/* The smallest program: write(2) and exit_group(2), no stdio. */
#include <unistd.h>

int main(void)
{
    static const char out[] = "hello, world\n";
    static const char err[] = "to stderr\n";

    write(1, out, sizeof(out) - 1);
    write(2, err, sizeof(err) - 1);
    return 7;
}
