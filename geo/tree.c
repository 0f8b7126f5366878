/*
 * tree.c: an AVL tree of cells ordered by code. The cells of a coarser
 * geohash are one contiguous range of codes at the index precision, so
 * near() reads a coarse cell as a range scan. AVL rather than a randomised
 * tree: positions come from clients, and the height (hence the recursion
 * depth) must stay O(log n) whatever they send.
 */
#include "geo_int.h"

static int32_t height(const struct geo_cell *n)
{
    return n ? n->height : 0;
}

static void fix_height(struct geo_cell *n)
{
    int32_t l = height(n->left), r = height(n->right);
    n->height = (l > r ? l : r) + 1;
}

static struct geo_cell *rotate_right(struct geo_cell *n)
{
    struct geo_cell *l = n->left;
    n->left = l->right;
    l->right = n;
    fix_height(n);
    fix_height(l);
    return l;
}

static struct geo_cell *rotate_left(struct geo_cell *n)
{
    struct geo_cell *r = n->right;
    n->right = r->left;
    r->left = n;
    fix_height(n);
    fix_height(r);
    return r;
}

static struct geo_cell *balance(struct geo_cell *n)
{
    fix_height(n);
    int32_t bf = height(n->left) - height(n->right);
    if (bf > 1) {
        if (height(n->left->left) < height(n->left->right))
            n->left = rotate_left(n->left);
        return rotate_right(n);
    }
    if (bf < -1) {
        if (height(n->right->right) < height(n->right->left))
            n->right = rotate_right(n->right);
        return rotate_left(n);
    }
    return n;
}

/* Inserts n (not in the tree; its code unique). Returns the new root. */
struct geo_cell *geo__tree_insert(struct geo_cell *root, struct geo_cell *n)
{
    if (!root) {
        n->left = n->right = NULL;
        n->height = 1;
        return n;
    }
    if (n->code < root->code)
        root->left = geo__tree_insert(root->left, n);
    else
        root->right = geo__tree_insert(root->right, n);
    return balance(root);
}

/* Detaches the smallest node of a subtree into *min; returns the rest. */
static struct geo_cell *remove_min(struct geo_cell *root, struct geo_cell **min)
{
    if (!root->left) {
        *min = root;
        return root->right;
    }
    root->left = remove_min(root->left, min);
    return balance(root);
}

/* Removes n (in the tree). Returns the new root. */
struct geo_cell *geo__tree_remove(struct geo_cell *root, struct geo_cell *n)
{
    if (!root)
        return NULL;
    if (n->code < root->code) {
        root->left = geo__tree_remove(root->left, n);
        return balance(root);
    }
    if (n->code > root->code) {
        root->right = geo__tree_remove(root->right, n);
        return balance(root);
    }
    if (!root->right)
        return root->left;
    struct geo_cell *min;
    struct geo_cell *rest = remove_min(root->right, &min);
    min->right = rest;
    min->left = root->left;
    return balance(min);
}

/* Lower bound: O(log n). */
const struct geo_cell *geo__tree_ceil(const struct geo_cell *root, uint64_t key)
{
    const struct geo_cell *best = NULL;
    while (root) {
        if (root->code >= key) {
            best = root;
            root = root->left;
        } else {
            root = root->right;
        }
    }
    return best;
}

/* In-order visit of lo <= code < hi; O(log n + cells visited). */
void geo__tree_range(struct geo_cell *root, uint64_t lo, uint64_t hi,
                     void (*fn)(struct geo_cell *c, void *arg), void *arg)
{
    while (root) {
        if (root->code < lo) {
            root = root->right;
        } else if (root->code >= hi) {
            root = root->left;
        } else {
            geo__tree_range(root->left, lo, hi, fn, arg);
            fn(root, arg);
            root = root->right;
        }
    }
}
