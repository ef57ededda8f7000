/*
 * avl.h - an intrusive AVL tree ordered by the caller's less function.
 *
 * Owns: the tree's shape: insertion, removal, rebalancing, and ordered
 * walks (first, last, next, prev) through parent links.
 * Does not own: the nodes' memory (callers embed struct avl_node in their
 * own objects and allocate and free them) or the order (a less function).
 *
 * Insert and remove are O(log n); next/prev are O(log n) worst case and
 * O(1) amortized over a whole walk. The tree never allocates.
 * Not thread-safe.
 *
 * NOTE: this header was reconstructed from avl.c and mm/vmm.[ch] after a
 * second agent working in the same worktree overwrote the original by
 * mistake; compare with the author's intent before relying on comments.
 */
#ifndef AVL_H
#define AVL_H

#include "lib/types.h"

struct avl_node {
    struct avl_node *left;
    struct avl_node *right;
    struct avl_node *parent;
    int64_t height; /* a leaf has height 1 */
};
static_assert(sizeof(struct avl_node) == 32, "avl_node layout");

struct avl_tree {
    struct avl_node *root;
};

/* True if a orders before b. */
typedef bool (*avl_less_t)(const struct avl_node *a, const struct avl_node *b);

/* Inserts n (equal nodes go to the right of existing ones). */
void avl_insert(struct avl_tree *t, struct avl_node *n, avl_less_t less);

/* Unlinks n, which must be in t. */
void avl_remove(struct avl_tree *t, struct avl_node *n);

/* The first / last node in order, or NULL for an empty tree. */
struct avl_node *avl_first(const struct avl_tree *t);
struct avl_node *avl_last(const struct avl_tree *t);

/* The in-order successor / predecessor of n, or NULL. */
struct avl_node *avl_next(const struct avl_node *n);
struct avl_node *avl_prev(const struct avl_node *n);

/* Checks parent links, balance, heights and order; panics "avl_check: ...".
 * Returns the number of nodes. */
size_t avl_check(const struct avl_tree *t, avl_less_t less);

#endif
