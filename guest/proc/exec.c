/*
 * exec.c - loading static ELF64 programs (see exec.h).
 *
 * Owns: the ELF checks (System V gABI: the file header, program headers),
 * the layout of a new image (segments, brk, the stack and the mmap area
 * below it, as Linux's load_elf_binary lays them out with randomization
 * off), and the initial stack (System V x86-64 psABI 3.4.1: argc at RSP,
 * then argv, NULL, envp, NULL, auxv pairs ending with AT_NULL; strings
 * above, RSP 16-byte aligned).
 * Does not own: reading the file's bytes for pages (the regions do that
 * on demand through the file's vm_object).
 */
#include "proc/exec.h"

#include "arch/x86_64/gdt.h"
#include "arch/x86_64/io.h"
#include "fs/file.h"
#include "heap/heap.h"
#include "lib/errno.h"
#include "lib/panic.h"
#include "lib/string.h"
#include "mm/pmm.h"
#include "mm/usercopy.h"
#include "proc/random.h"
#include "proc/signal.h"

#define ET_EXEC 2
#define ET_DYN 3
#define EM_X86_64 62
#define PT_LOAD 1
#define PT_INTERP 3
#define PT_PHDR 6
#define PT_GNU_STACK 0x6474e551u
#define PF_X 1
#define PF_W 2
#define PF_R 4
#define PHDRS_MAX 128
#define RFLAGS_USER 0x202 /* IF and the reserved bit 1 */
#define PLATFORM "x86_64"
#define AUX_PAIRS 20

struct elf64_ehdr {
    uint8_t ident[16];
    uint16_t type;
    uint16_t machine;
    uint32_t version;
    uint64_t entry;
    uint64_t phoff;
    uint64_t shoff;
    uint32_t flags;
    uint16_t ehsize;
    uint16_t phentsize;
    uint16_t phnum;
    uint16_t shentsize;
    uint16_t shnum;
    uint16_t shstrndx;
};
static_assert(sizeof(struct elf64_ehdr) == 64, "ELF header");

struct elf64_phdr {
    uint32_t type;
    uint32_t flags;
    uint64_t offset;
    uint64_t vaddr;
    uint64_t paddr;
    uint64_t filesz;
    uint64_t memsz;
    uint64_t align;
};
static_assert(sizeof(struct elf64_phdr) == 56, "ELF program header");

static uint64_t page_down(uint64_t a)
{
    return a & ~(PAGE_SIZE - 1);
}

static uint64_t page_up(uint64_t a)
{
    return (a + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
}

/* ---- Arguments -------------------------------------------------------------------- */

static int args_alloc(struct exec_args *a, size_t argc, size_t envc)
{
    memset(a, 0, sizeof(*a));
    a->path = kmalloc(EXEC_PATH_MAX);
    a->strings = kmalloc(EXEC_STRINGS_MAX);
    a->argv = kmalloc((argc + envc + 2) * sizeof(char *));
    if (a->path == NULL || a->strings == NULL || a->argv == NULL) {
        exec_args_free(a);
        return -ENOMEM;
    }
    a->argc = argc;
    a->envc = envc;
    a->envp = a->argv + argc + 1;
    a->argv[argc] = NULL;
    a->envp[envc] = NULL;
    return 0;
}

void exec_args_free(struct exec_args *a)
{
    kfree(a->path);
    kfree(a->strings);
    kfree(a->argv);
    memset(a, 0, sizeof(*a));
}

/* Entries of a user pointer vector before its NULL: >= 0, or -errno. */
static int64_t count_vector(vaddr_t vec)
{
    for (int64_t n = 0; vec != 0; n++) {
        uint64_t ptr;

        if (n >= EXEC_VECTOR_MAX)
            return -E2BIG;
        if (copy_from_user(&ptr, vec + 8 * (uint64_t)n, 8) != 0)
            return -EFAULT;
        if (ptr == 0)
            return n;
    }
    return 0;
}

/* Copies the strings of a user vector into a->strings from *used on. */
static int copy_vector(struct exec_args *a, vaddr_t vec, size_t n, char **out, size_t *used)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t ptr;
        int64_t len;

        if (copy_from_user(&ptr, vec + 8 * i, 8) != 0)
            return -EFAULT;
        len = copy_string_from_user(a->strings + *used, ptr, EXEC_STRINGS_MAX - *used);
        if (len < 0)
            return len == -ENAMETOOLONG ? -E2BIG : (int)len;
        out[i] = a->strings + *used;
        *used += (size_t)len + 1;
    }
    return 0;
}

int exec_args_from_user(vaddr_t path, vaddr_t argv, vaddr_t envp, struct exec_args *out)
{
    int64_t argc = count_vector(argv), envc = count_vector(envp), len;
    size_t used = 0;
    char *raw;
    int status;

    if (argc < 0 || envc < 0)
        return (int)(argc < 0 ? argc : envc);
    status = args_alloc(out, (size_t)argc, (size_t)envc);
    if (status != 0)
        return status;
    raw = out->strings; /* the raw path first; the strings overwrite it later */
    len = copy_string_from_user(raw, path, EXEC_PATH_MAX);
    if (len >= 0 && len == 0)
        len = -ENOENT;
    if (len >= 0)
        len = path_normalize(raw, out->path, EXEC_PATH_MAX);
    if (len >= 0)
        len = copy_vector(out, argv, out->argc, out->argv, &used);
    if (len >= 0)
        len = copy_vector(out, envp, out->envc, out->envp, &used);
    if (len < 0) {
        exec_args_free(out);
        return (int)len;
    }
    return 0;
}

static int copy_kernel_vector(struct exec_args *a, char *const vec[], size_t n, char **out,
                              size_t *used)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(vec[i]) + 1;

        if (len > EXEC_STRINGS_MAX - *used)
            return -E2BIG;
        memcpy(a->strings + *used, vec[i], len);
        out[i] = a->strings + *used;
        *used += len;
    }
    return 0;
}

int exec_args_from_kernel(const char *path, char *const argv[], char *const envp[],
                          struct exec_args *out)
{
    size_t argc = 0, envc = 0, used = 0;
    int status;

    while (argv[argc] != NULL)
        argc++;
    while (envp[envc] != NULL)
        envc++;
    status = args_alloc(out, argc, envc);
    if (status == 0)
        status = path_normalize(path, out->path, EXEC_PATH_MAX);
    if (status == 0)
        status = copy_kernel_vector(out, argv, argc, out->argv, &used);
    if (status == 0)
        status = copy_kernel_vector(out, envp, envc, out->envp, &used);
    if (status != 0 && out->path != NULL)
        exec_args_free(out);
    return status;
}

/* ---- The ELF file ------------------------------------------------------------------- */

struct elf_plan {
    const struct elf64_ehdr *eh;
    const struct elf64_phdr *ph;
    uint64_t bias;        /* added to every p_vaddr */
    uint64_t end;         /* first address past the segments, biased */
    bool exec_stack;
    vaddr_t phdr_address; /* where the program headers are in memory, or 0 */
};

static bool segment_ok(const struct elf64_phdr *p, uint64_t file_size)
{
    return p->filesz <= p->memsz && p->offset + p->filesz >= p->offset &&
           p->offset + p->filesz <= file_size && p->vaddr + p->memsz >= p->vaddr &&
           p->vaddr + p->memsz <= AS_STACK_TOP && (p->vaddr & (PAGE_SIZE - 1)) ==
           (p->offset & (PAGE_SIZE - 1));
}

static bool header_ok(const struct elf64_ehdr *eh, uint64_t size)
{
    static const uint8_t magic[7] = {0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* LSB */, 1};

    return size >= sizeof(*eh) && memcmp(eh->ident, magic, sizeof(magic)) == 0 &&
           (eh->type == ET_EXEC || eh->type == ET_DYN) && eh->machine == EM_X86_64 &&
           eh->phentsize == sizeof(struct elf64_phdr) && eh->phnum > 0 &&
           eh->phnum <= PHDRS_MAX && eh->phoff < size &&
           eh->phoff + (uint64_t)eh->phnum * sizeof(struct elf64_phdr) <= size &&
           (eh->phoff & 7) == 0;
}

/* Checks the whole file and plans its layout; -ENOEXEC if it cannot run. */
static int plan(const struct file *f, struct elf_plan *p)
{
    const uint8_t *data = f->entry->data;
    uint64_t size = f->entry->size, low = ~0ULL, high = 0;

    memset(p, 0, sizeof(*p));
    p->eh = (const struct elf64_ehdr *)data;
    p->exec_stack = true; /* no PT_GNU_STACK: an executable stack, as on Linux */
    if (!header_ok(p->eh, size))
        return -ENOEXEC;
    p->ph = (const struct elf64_phdr *)(data + p->eh->phoff);
    for (size_t i = 0; i < p->eh->phnum; i++) {
        const struct elf64_phdr *ph = &p->ph[i];

        if (ph->type == PT_INTERP)
            return -ENOEXEC;
        if (ph->type == PT_GNU_STACK)
            p->exec_stack = (ph->flags & PF_X) != 0;
        if (ph->type != PT_LOAD || ph->memsz == 0)
            continue;
        if (!segment_ok(ph, size))
            return -ENOEXEC;
        if (page_down(ph->vaddr) < low)
            low = page_down(ph->vaddr);
        if (ph->vaddr + ph->memsz > high)
            high = ph->vaddr + ph->memsz;
        if (ph->offset <= p->eh->phoff &&
            p->eh->phoff + p->eh->phnum * sizeof(*ph) <= ph->offset + ph->filesz)
            p->phdr_address = ph->vaddr + (p->eh->phoff - ph->offset);
    }
    if (high == 0)
        return -ENOEXEC;
    p->bias = p->eh->type == ET_DYN ? ELF_ET_DYN_BASE - low : 0;
    if (p->bias + low < AS_MIN_ADDRESS || high + p->bias > AS_STACK_TOP - AS_MMAP_GAP)
        return -ENOEXEC;
    p->end = page_up(high + p->bias);
    if (p->phdr_address != 0)
        p->phdr_address += p->bias;
    return 0;
}

static uint32_t prot_of(uint32_t pflags)
{
    return ((pflags & PF_R) ? VMA_READ : 0) | ((pflags & PF_W) ? VMA_WRITE : 0) |
           ((pflags & PF_X) ? VMA_EXEC : 0);
}

/* Maps one PT_LOAD: the file part (with the start of its bss in the same
 * page, which reads as zero), then the rest of the bss. */
static int map_segment(struct address_space *as, struct file *f, const struct elf64_phdr *ph,
                       uint64_t bias)
{
    vaddr_t start = page_down(ph->vaddr + bias), at;
    vaddr_t file_end = page_up(ph->vaddr + bias + ph->filesz);
    vaddr_t mem_end = page_up(ph->vaddr + bias + ph->memsz);
    uint64_t head = (ph->vaddr + bias) - start;
    struct as_mapping m = {.prot = prot_of(ph->flags), .sharing = VMA_PRIVATE,
                           .growth = VMA_FIXED_SIZE, .role = VMA_ROLE_IMAGE};
    int status = AS_OK;

    if (ph->filesz > 0) {
        m.object = &f->object;
        m.offset = ph->offset - head;
        m.file_bytes = head + ph->filesz;
        status = as_map(as, start, file_end - start, &m, AS_FIXED, &at);
        start = file_end;
    }
    if (status == AS_OK && mem_end > start) {
        m.object = NULL;
        m.offset = m.file_bytes = 0;
        status = as_map(as, start, mem_end - start, &m, AS_FIXED, &at);
    }
    return status == AS_OK ? 0 : -ENOMEM;
}

/* ---- The stack ----------------------------------------------------------------------- */

/* Copies n bytes into as at va (not live), faulting the pages in. */
static int as_write(struct address_space *as, vaddr_t va, const void *src, size_t n)
{
    const uint8_t *s = src;

    while (n > 0) {
        size_t chunk = PAGE_SIZE - (va & (PAGE_SIZE - 1));
        paddr_t pa;

        if (chunk > n)
            chunk = n;
        if (as_populate(as, page_down(va), PAGE_SIZE, AS_ACCESS_WRITE) != AS_OK)
            return -ENOMEM;
        pa = vmm_translate(as->root, va);
        memcpy(phys_to_virt(pa), s, chunk);
        va += chunk;
        s += chunk;
        n -= chunk;
    }
    return 0;
}

static uint64_t hwcap(void)
{
    uint32_t a = 1, b, c = 0, d;

    __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
    return d;
}

struct stack_plan {
    vaddr_t execfn, platform, random;
    const struct elf_plan *elf;
};

/* The auxiliary vector, AT_NULL last; returns the words written. */
static size_t auxv(uint64_t *w, const struct stack_plan *s)
{
    const struct elf_plan *e = s->elf;
    const uint64_t pairs[][2] = {
        {AT_PHDR, e->phdr_address}, {AT_PHENT, sizeof(struct elf64_phdr)},
        {AT_PHNUM, e->eh->phnum},   {AT_PAGESZ, PAGE_SIZE},
        {AT_BASE, 0},               {AT_FLAGS, 0},
        {AT_ENTRY, e->eh->entry + e->bias},
        {AT_UID, 0}, {AT_EUID, 0}, {AT_GID, 0}, {AT_EGID, 0},
        {AT_HWCAP, hwcap()},        {AT_HWCAP2, 0},
        {AT_CLKTCK, LINUX_CLKTCK},  {AT_SECURE, 0},
        {AT_RANDOM, s->random},     {AT_PLATFORM, s->platform},
        {AT_EXECFN, s->execfn},     {AT_NULL, 0},
    };
    size_t n = 0;

    static_assert(ARRAY_SIZE(pairs) <= AUX_PAIRS, "AUX_PAIRS");
    for (size_t i = 0; i < ARRAY_SIZE(pairs); i++) {
        w[n++] = pairs[i][0];
        w[n++] = pairs[i][1];
    }
    return n;
}

/* Writes the strings above top - 8, from the highest address down. */
static int write_strings(struct address_space *as, const struct exec_args *a, vaddr_t *p,
                         uint64_t *where)
{
    for (size_t i = a->argc + a->envc; i-- > 0;) {
        const char *s = i < a->argc ? a->argv[i] : a->envp[i - a->argc];
        size_t len = strlen(s) + 1;

        *p -= len;
        where[i] = *p;
        if (as_write(as, *p, s, len) != 0)
            return -ENOMEM;
    }
    return 0;
}

static int build_stack(struct address_space *as, const struct exec_args *a,
                       const struct elf_plan *elf, vaddr_t *sp_out)
{
    size_t nstr = a->argc + a->envc;
    size_t words = 1 + (a->argc + 1) + (a->envc + 1) + 2 * AUX_PAIRS;
    uint64_t *w = kcalloc(words + nstr, sizeof(uint64_t));
    uint64_t *where = w + words;
    struct stack_plan s = {.elf = elf};
    vaddr_t p = as->stack_top - 8, sp;
    uint8_t random[16];
    size_t n = 0;
    int status;

    if (w == NULL)
        return -ENOMEM;
    p -= strlen(a->path) + 1;
    s.execfn = p;
    status = as_write(as, p, a->path, strlen(a->path) + 1);
    if (status == 0)
        status = write_strings(as, a, &p, where);
    p -= sizeof(PLATFORM);
    s.platform = p;
    p = (p & ~(vaddr_t)15) - sizeof(random);
    s.random = p;
    random_fill(random, sizeof(random));
    if (status == 0)
        status = as_write(as, s.platform, PLATFORM, sizeof(PLATFORM));
    if (status == 0)
        status = as_write(as, s.random, random, sizeof(random));
    w[n++] = a->argc;
    for (size_t i = 0; i < a->argc; i++)
        w[n++] = where[i];
    w[n++] = 0;
    for (size_t i = 0; i < a->envc; i++)
        w[n++] = where[a->argc + i];
    w[n++] = 0;
    n += auxv(w + n, &s);
    sp = (p - n * 8) & ~(vaddr_t)15;
    if (status == 0 && as->stack_top - sp > as->stack_limit)
        status = -E2BIG;
    if (status == 0)
        status = as_write(as, sp, w, n * 8);
    kfree(w);
    *sp_out = sp;
    return status;
}

/* ---- Loading and switching ----------------------------------------------------------------- */

static int layout(struct address_space *as, struct file *f, const struct elf_plan *e,
                  uint64_t stack_limit)
{
    struct as_mapping stack = {.prot = VMA_READ | VMA_WRITE | (e->exec_stack ? VMA_EXEC : 0),
                               .sharing = VMA_PRIVATE, .growth = VMA_GROWS_DOWN,
                               .role = VMA_ROLE_STACK};
    uint64_t gap = stack_limit + AS_STACK_GUARD_GAP;
    vaddr_t at;

    if (gap < AS_MMAP_GAP)
        gap = AS_MMAP_GAP;
    if (gap > AS_STACK_TOP / 6 * 5)
        gap = AS_STACK_TOP / 6 * 5;
    as->stack_limit = stack_limit;
    as->mmap_top = page_down(AS_STACK_TOP - gap);
    for (size_t i = 0; i < e->eh->phnum; i++) {
        if (e->ph[i].type == PT_LOAD && e->ph[i].memsz != 0 &&
            map_segment(as, f, &e->ph[i], e->bias) != 0)
            return -ENOMEM;
    }
    as->brk_start = as->brk = e->end;
    if (as_map(as, AS_STACK_TOP - AS_STACK_INITIAL, AS_STACK_INITIAL, &stack, AS_FIXED, &at) !=
        AS_OK)
        return -ENOMEM;
    return 0;
}

int exec_load(const struct exec_args *a, uint64_t stack_limit, struct exec_image *out)
{
    int error = 0;
    struct file *f = file_open(a->path, O_RDONLY, &error);
    struct elf_plan e;

    memset(out, 0, sizeof(*out));
    if (f == NULL)
        return error;
    if (f->kind != FILE_INITRD) {
        file_put(f);
        return -EACCES;
    }
    error = plan(f, &e);
    if (error == 0) {
        out->as = as_create();
        error = out->as == NULL ? -ENOMEM : layout(out->as, f, &e, stack_limit);
    }
    if (error == 0)
        error = build_stack(out->as, a, &e, &out->stack_pointer);
    if (error == 0)
        out->entry = e.eh->entry + e.bias;
    if (error != 0 && out->as != NULL) {
        as_destroy(out->as);
        out->as = NULL;
    }
    file_put(f); /* the regions hold their own references */
    return error;
}

void exec_commit(struct proc *p, const struct exec_args *a, const struct exec_image *img)
{
    struct address_space *old = p->as;
    struct interrupt_frame *f = p->frame;

    p->as = img->as;
    if (p == proc_current())
        as_activate(p->as);
    if (old != NULL)
        as_destroy(old);
    proc_set_name(p, a->path);
    if (p->fds != NULL)
        fd_close_on_exec(p->fds);
    signal_exec_reset(p);
    p->fs_base = p->gs_base = 0;
    p->clear_child_tid = 0;
    proc_reset_user_state(p);
    memset(f, 0, sizeof(*f));
    f->rip = img->entry;
    f->cs = GDT_USER_CODE;
    f->rflags = RFLAGS_USER;
    f->rsp = img->stack_pointer;
    f->ss = GDT_USER_DATA;
    proc_release_vfork(p);
    proc_trace(p, TRACE_PROC_EXEC);
}
