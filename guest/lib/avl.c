/*
 * avl.c - the AVL tree of avl.h.
 *
 * Owns: rotations and rebalancing. After any change the path from the
 * changed node to the root is rebalanced, bottom up (at most O(log n)
 * nodes, each fixed with one or two rotations), so every node's subtrees
 * differ in height by at most one (Adelson-Velsky and Landis, 1962).
 * Does not own: keys (the caller's less function) or node memory.
 */
#include "lib/avl.h"

#include "lib/panic.h"

static int64_t height(const struct avl_node *n)
{
    return n != NULL ? n->height : 0;
}

static void update_height(struct avl_node *n)
{
    int64_t l = height(n->left), r = height(n->right);

    n->height = 1 + (l > r ? l : r);
}

/* Makes new take old's place under parent (or as the root). */
static void replace_child(struct avl_tree *t, struct avl_node *parent, struct avl_node *old,
                          struct avl_node *new)
{
    if (parent == NULL)
        t->root = new;
    else if (parent->left == old)
        parent->left = new;
    else
        parent->right = new;
    if (new != NULL)
        new->parent = parent;
}

static struct avl_node *rotate_left(struct avl_tree *t, struct avl_node *x)
{
    struct avl_node *y = x->right;

    x->right = y->left;
    if (y->left != NULL)
        y->left->parent = x;
    replace_child(t, x->parent, x, y);
    y->left = x;
    x->parent = y;
    update_height(x);
    update_height(y);
    return y;
}

static struct avl_node *rotate_right(struct avl_tree *t, struct avl_node *x)
{
    struct avl_node *y = x->left;

    x->left = y->right;
    if (y->right != NULL)
        y->right->parent = x;
    replace_child(t, x->parent, x, y);
    y->right = x;
    x->parent = y;
    update_height(x);
    update_height(y);
    return y;
}

/* Restores balance at n; returns the node now at n's place. */
static struct avl_node *rebalance(struct avl_tree *t, struct avl_node *n)
{
    int64_t balance;

    update_height(n);
    balance = height(n->left) - height(n->right);
    if (balance > 1) {
        if (height(n->left->left) < height(n->left->right))
            rotate_left(t, n->left);
        return rotate_right(t, n);
    }
    if (balance < -1) {
        if (height(n->right->right) < height(n->right->left))
            rotate_right(t, n->right);
        return rotate_left(t, n);
    }
    return n;
}

static void fix_up(struct avl_tree *t, struct avl_node *n)
{
    while (n != NULL)
        n = rebalance(t, n)->parent;
}

void avl_insert(struct avl_tree *t, struct avl_node *n, avl_less_t less)
{
    struct avl_node *parent = NULL, **link = &t->root;

    while (*link != NULL) {
        parent = *link;
        link = less(n, parent) ? &parent->left : &parent->right;
    }
    n->left = n->right = NULL;
    n->parent = parent;
    n->height = 1;
    *link = n;
    fix_up(t, parent);
}

static struct avl_node *leftmost(struct avl_node *n)
{
    while (n->left != NULL)
        n = n->left;
    return n;
}

static struct avl_node *rightmost(struct avl_node *n)
{
    while (n->right != NULL)
        n = n->right;
    return n;
}

void avl_remove(struct avl_tree *t, struct avl_node *n)
{
    struct avl_node *fix_from;

    if (n->left != NULL && n->right != NULL) {
        /* The successor s (no left child) takes n's place. */
        struct avl_node *s = leftmost(n->right);

        if (s->parent == n) {
            fix_from = s;
        } else {
            fix_from = s->parent;
            replace_child(t, s->parent, s, s->right);
            s->right = n->right;
            s->right->parent = s;
        }
        s->left = n->left;
        s->left->parent = s;
        replace_child(t, n->parent, n, s);
        s->height = n->height;
    } else {
        fix_from = n->parent;
        replace_child(t, n->parent, n, n->left != NULL ? n->left : n->right);
    }
    fix_up(t, fix_from);
}

struct avl_node *avl_first(const struct avl_tree *t)
{
    return t->root != NULL ? leftmost(t->root) : NULL;
}

struct avl_node *avl_last(const struct avl_tree *t)
{
    return t->root != NULL ? rightmost(t->root) : NULL;
}

struct avl_node *avl_next(const struct avl_node *n)
{
    if (n->right != NULL)
        return leftmost(n->right);
    while (n->parent != NULL && n->parent->right == n)
        n = n->parent;
    return n->parent;
}

struct avl_node *avl_prev(const struct avl_node *n)
{
    if (n->left != NULL)
        return rightmost(n->left);
    while (n->parent != NULL && n->parent->left == n)
        n = n->parent;
    return n->parent;
}

static size_t check_node(const struct avl_node *n, const struct avl_node *parent)
{
    int64_t balance;

    if (n == NULL)
        return 0;
    if (n->parent != parent)
        panic("avl_check: bad parent link at %p", n);
    balance = height(n->left) - height(n->right);
    if (balance > 1 || balance < -1)
        panic("avl_check: unbalanced at %p", n);
    if (n->height != 1 + (height(n->left) > height(n->right) ? height(n->left)
                                                               : height(n->right)))
        panic("avl_check: wrong height at %p", n);
    return 1 + check_node(n->left, n) + check_node(n->right, n);
}

size_t avl_check(const struct avl_tree *t, avl_less_t less)
{
    size_t count = check_node(t->root, NULL);
    const struct avl_node *prev = NULL;

    for (const struct avl_node *n = avl_first(t); n != NULL; n = avl_next(n)) {
        if (prev != NULL && less(n, prev))
            panic("avl_check: out of order at %p", n);
        prev = n;
    }
    return count;
}
