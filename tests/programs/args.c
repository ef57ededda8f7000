/* argc, argv and the environment, as the program sees them. */
#include <stdio.h>

extern char **environ;

int main(int argc, char **argv)
{
    printf("argc %d\n", argc);
    for (int i = 1; i < argc; i++)
        printf("argv[%d] [%s]\n", i, argv[i]);
    for (char **e = environ; *e != NULL; e++)
        printf("env [%s]\n", *e);
    return argc;
}
