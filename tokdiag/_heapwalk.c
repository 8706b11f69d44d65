/* tokdiag._heapwalk: the C loops of why_alive (tokdiag/analysis/retention/walk.py).
 *
 * Optional like tokdiag._speedups: without a C compiler walk.py runs the
 * same algorithm in Python over a gc.get_objects() list, same results, slower.
 *
 * The heap. A Walk reads the gc-tracked objects either from a list given to
 * it (oldest first) or, when ``direct()`` is true, straight from the
 * collector's generation lists, with no list of its own: that saves building
 * and freeing a list of every object (as long as one pass, on a heap of a
 * million objects) and 8 bytes an object. The lists are found from a fresh
 * tracked object: CPython links it last in generation 0, so the header
 * after it is generation 0's list head; generations 1 and 2 and the
 * permanent one follow it in the interpreter's state (CPython 3.8-3.13:
 * ``generations[3]``, ``generation0``, ``permanent_generation``), and each
 * head is checked to be a consistent list head before it is used.
 * Free-threaded builds and 3.14+ (an incremental collector) use a list. The objects tracked after the Walk was made (the
 * search's own lists) are never walked: a sentinel object marks where the
 * heap ended.
 *
 * Walk(seeds, roots, blocked, max_nodes=2**22, heap=None): the backward
 * search from ``seeds`` (the sampled instances). ``roots`` are containers
 * where a chain ends (the namespaces of loaded modules, sys.modules): they
 * are reached but their own referrers are never searched. ``blocked``
 * objects are never reached (tokdiag's own). A hash table keyed by address
 * holds every object the search knows, with a reference to each (an object
 * freed by another thread between passes cannot leave a dangling entry).
 * Nothing is hashed by Python.
 *
 * Walk.run(newest_first) -> int: one pass over the heap, newest first when
 * asked. Each object is traversed with its own tp_traverse (what
 * gc.get_referents does); when it refers to a reached object it is reached
 * too, at once, so later objects of the same pass see it: a chain whose
 * every holder comes later in the pass than what it holds (old containers
 * holding new objects, the usual leak, newest first) is found in one pass,
 * whatever its length. An instance's own __dict__ is looked through in the
 * same step: CPython 3.11+ makes it on first use, newer than the values in it. A class is never
 * traversed: it is reached only when its own namespace dict is, as the root
 * of that dict. Returns the number of objects reached in this pass; 0 means
 * the search is complete. References found from a reached object to a
 * reached object are recorded, each at least once.
 *
 * Walk.nodes() -> list: the reached objects, seeds first, in the order reached.
 * Walk.kinds() -> bytes: per reached object, 0 plain, 1 root, 3 class.
 * Walk.edges() -> bytes: native int32 pairs (holder, held), node numbers; may repeat.
 * Walk.truncated: whether max_nodes stopped the search.
 *
 * Walk.outside(objs, holders) -> list[int]: for each object of the list
 * ``objs``, its reference count minus the references the heap's objects
 * hold to it (each one, as tp_traverse visits it), minus this Walk's own
 * (and its heap list's), minus its occurrences in ``objs`` and in the lists of the tuple
 * ``holders``: the references from outside Python's heap (C state, a
 * running frame's stack), which is what the collector counts as external.
 *
 * newest(types, limit, heap=None, until=None) -> list: up to ``limit`` objects
 * whose type is one of the list ``types`` (compared by address), newest
 * first, none older than ``until`` (a tracked object: the walk stops there).
 *
 * direct() -> bool: whether the generation lists can be walked here.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { K_PLAIN = 0, K_ROOT = 1, K_BLOCKED = 2, K_CLASS = 3 };

/* ------------------------------------------------------------------ the generation lists */

typedef struct {
    uintptr_t next;
    uintptr_t prev;  /* the low two bits are flags */
} GCHead;

typedef struct {     /* CPython's struct gc_generation */
    GCHead head;
    int threshold;
    int count;
} GCGeneration;

#define AS_GC(o) ((GCHead *)(o) - 1)
#define FROM_GC(g) ((PyObject *)((GCHead *)(g) + 1))
#define G_NEXT(g) ((GCHead *)((g)->next & ~(uintptr_t)3))
#define G_PREV(g) ((GCHead *)((g)->prev & ~(uintptr_t)3))

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)0)
#endif

/* CPython 3.8-3.13 keep ``struct gc_generation generations[3]; PyGC_Head *generation0; struct gc_generation
   permanent_generation;`` in a row in their gc state (3.14's incremental collector lays its lists out anew) */
typedef struct {
    GCGeneration generations[3];
    GCHead *generation0;
    GCGeneration permanent;
} GCLists;

#if !defined(Py_GIL_DISABLED) && PY_VERSION_HEX >= 0x03080000 && PY_VERSION_HEX < 0x030E0000
#define HAVE_DIRECT 1
#else
#define HAVE_DIRECT 0
#endif

/* The heads of generations 0, 1, 2 and of the permanent one (gc.freeze()); 0 when they cannot be found here. */
static int
gc_heads(GCHead *heads[4])
{
#if HAVE_DIRECT
    PyObject *probe = PyList_New(0);  /* tracked at once: last in generation 0 */
    if (probe == NULL) {
        PyErr_Clear();
        return 0;
    }
    GCHead *h0 = PyObject_GC_IsTracked(probe) ? G_NEXT(AS_GC(probe)) : NULL;
    int ok = h0 != NULL && G_PREV(h0) == AS_GC(probe);
    Py_DECREF(probe);
    if (!ok)
        return 0;
    GCLists *lists = (GCLists *)h0;
    if (lists->generation0 != h0)
        return 0;
    for (int k = 0; k < 4; k++) {
        GCHead *h = k < 3 ? &lists->generations[k].head : &lists->permanent.head;
        GCHead *n = G_NEXT(h), *p = G_PREV(h);
        if (n == NULL || p == NULL)
            return 0;
        if (!((n == h && p == h) || (G_PREV(n) == h && G_NEXT(p) == h)))
            return 0;
        heads[k] = h;
    }
    return 1;
#else
    (void)heads;
    return 0;
#endif
}

/* A cursor over the heap: a list (oldest first), or the generation lists up to ``stop``. */
typedef struct {
    PyObject *list;
    Py_ssize_t i;
    GCHead *heads[4]; /* generations 0, 1, 2, permanent (an end: it is not walked) */
    GCHead *at;
    GCHead *stop;     /* the sentinel's header: never walked past (direct mode) */
    PyObject *until;  /* newest first: stop before this object */
    int newest_first;
    int gen;
} Cursor;

static void
cursor_start(Cursor *c, PyObject *list, GCHead *heads[4], PyObject *sentinel, int newest_first)
{
    memset(c, 0, sizeof(*c));
    c->list = list;
    c->newest_first = newest_first;
    if (list != NULL) {
        c->i = newest_first ? PyList_GET_SIZE(list) - 1 : 0;
        return;
    }
    memcpy(c->heads, heads, sizeof(c->heads));
    c->stop = sentinel != NULL ? AS_GC(sentinel) : NULL;
    if (newest_first) {
        c->gen = 0;
        c->at = c->stop != NULL ? c->stop : heads[0];  /* the first step goes to its predecessor */
    }
    else {
        c->gen = 2;
        c->at = heads[2];
    }
}

static PyObject *
cursor_next(Cursor *c)
{
    if (c->list != NULL) {
        if (c->i < 0 || c->i >= PyList_GET_SIZE(c->list))
            return NULL;
        PyObject *o = PyList_GET_ITEM(c->list, c->i);
        if (o == c->until)
            return NULL;
        Py_ssize_t ahead = c->i + (c->newest_first ? -8 : 8);
        if (ahead >= 0 && ahead < PyList_GET_SIZE(c->list))
            PREFETCH(AS_GC(PyList_GET_ITEM(c->list, ahead)));  /* its header, while this one is traversed */
        c->i += c->newest_first ? -1 : 1;
        return o;
    }
    for (;;) {
        GCHead *g = c->newest_first ? G_PREV(c->at) : G_NEXT(c->at);
        if (g == c->heads[0] || g == c->heads[1] || g == c->heads[2] || g == c->heads[3]) {
            /* a generation's end; the permanent one's when another thread froze the sentinel (the end too) */
            int k = g == c->heads[0] ? 0 : g == c->heads[1] ? 1 : g == c->heads[2] ? 2 : 3;
            if (k == 3 || (c->newest_first ? k == 2 : k == 0))
                return NULL;
            c->at = c->heads[c->newest_first ? k + 1 : k - 1];
            continue;
        }
        if (g == c->stop || (c->until != NULL && g == AS_GC(c->until)))
            return NULL;
        c->at = g;
        PREFETCH(c->newest_first ? G_PREV(g) : G_NEXT(g));  /* the next header, while this object is traversed */
        return FROM_GC(g);
    }
}

/* ------------------------------------------------------------------ the table */

typedef struct {
    PyObject *key;   /* NULL: empty; a strong reference otherwise */
    int32_t node;    /* -1: known (root, blocked) but not reached */
    uint8_t kind;
} Slot;

typedef struct {
    Slot *table;
    Py_ssize_t mask;  /* table size - 1 (a power of two) */
    Py_ssize_t used;
    int shift;        /* 64 - log2(table size) */
    uint64_t *bits;   /* a filter: one bit per hash value, set for every key; most lookups are misses,
                         and a 4 KiB bitmap stays in L1 where the table would not, the heap streaming by */
    int bshift;       /* 64 - log2(bits in the filter) */
} Table;

/* Fibonacci hashing: the top bits of the address times 2**64 / golden ratio. */
static inline size_t
hash_ptr(const void *p, int shift)
{
    return (size_t)(((uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ULL) >> shift);
}

static inline int
shift_for(Py_ssize_t size)
{
    int bits = 0;
    while (((Py_ssize_t)1 << bits) < size)
        bits++;
    return 64 - bits;
}

static inline int
maybe(const Table *t, const void *key)
{
    size_t b = hash_ptr(key, t->bshift);
    return (int)((t->bits[b >> 6] >> (b & 63)) & 1);
}

static inline void
mark(Table *t, const void *key)
{
    size_t b = hash_ptr(key, t->bshift);
    t->bits[b >> 6] |= (uint64_t)1 << (b & 63);
}

/* (Re)size the filter for ``size`` table slots: 16 bits a slot, at least 32 Ki bits; marks every key. */
static int
filter_init(Table *t, Py_ssize_t size)
{
    Py_ssize_t nbits = (Py_ssize_t)1 << 15;
    while (nbits < 16 * size)
        nbits *= 2;
    uint64_t *bits = PyMem_RawCalloc((size_t)(nbits / 64), sizeof(uint64_t));
    if (bits == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    PyMem_RawFree(t->bits);
    t->bits = bits;
    t->bshift = shift_for(nbits);
    for (Py_ssize_t k = 0; t->table != NULL && k <= t->mask; k++)
        if (t->table[k].key != NULL)
            mark(t, t->table[k].key);
    return 0;
}

static Slot *
find(Table *t, PyObject *key)
{
    if (!maybe(t, key))
        return NULL;
    size_t i = hash_ptr(key, t->shift);
    for (;;) {
        Slot *s = &t->table[i];
        if (s->key == key)
            return s;
        if (s->key == NULL)
            return NULL;
        i = (i + 1) & (size_t)t->mask;
    }
}

static int
table_init(Table *t, Py_ssize_t n)
{
    t->mask = 1023;
    while (t->mask + 1 < 2 * (n + 1))
        t->mask = t->mask * 2 + 1;
    t->used = 0;
    t->shift = shift_for(t->mask + 1);
    t->bits = NULL;
    t->table = PyMem_RawCalloc((size_t)t->mask + 1, sizeof(Slot));
    if (t->table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return filter_init(t, t->mask + 1);
}

static void
table_free(Table *t, int owned)
{
    PyMem_RawFree(t->bits);
    t->bits = NULL;
    if (t->table == NULL)
        return;
    if (owned)
        for (Py_ssize_t k = 0; k <= t->mask; k++)
            Py_XDECREF(t->table[k].key);
    PyMem_RawFree(t->table);
    t->table = NULL;
}

/* The slot of ``key``, inserted with ``kind`` (node -1, a new reference when ``owned``) when absent. */
static Slot *
insert(Table *t, PyObject *key, uint8_t kind, int owned)
{
    Slot *s = find(t, key);
    if (s != NULL)
        return s;
    if ((t->used + 1) * 2 > t->mask + 1) {
        Py_ssize_t size = (t->mask + 1) * 2;
        int shift = shift_for(size);
        Slot *nt = PyMem_RawCalloc((size_t)size, sizeof(Slot));
        if (nt == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        for (Py_ssize_t k = 0; k <= t->mask; k++) {
            if (t->table[k].key == NULL)
                continue;
            size_t i = hash_ptr(t->table[k].key, shift);
            while (nt[i].key != NULL)
                i = (i + 1) & (size_t)(size - 1);
            nt[i] = t->table[k];
        }
        PyMem_RawFree(t->table);
        t->table = nt;
        t->mask = size - 1;
        t->shift = shift;
        if (filter_init(t, size) < 0)
            return NULL;
    }
    size_t i = hash_ptr(key, t->shift);
    while (t->table[i].key != NULL)
        i = (i + 1) & (size_t)t->mask;
    s = &t->table[i];
    if (owned)
        Py_INCREF(key);
    mark(t, key);
    s->key = key;
    s->node = -1;
    s->kind = kind;
    t->used++;
    return s;
}

/* ------------------------------------------------------------------ Walk */

typedef struct {
    PyObject_HEAD
    Table t;
    PyObject *heap;          /* the list walked, or NULL: the generation lists */
    PyObject *sentinel;      /* direct mode: tracked when the Walk was made; the walk stops there */
    GCHead *heads[4];
    PyObject **obj;          /* reached objects (their references are the table's) */
    uint8_t *kind;
    int32_t *added;          /* pass that reached it (0: a seed) */
    uint64_t *stamp;         /* the last traversal that counted it as a hit (hits are told once per holder) */
    uint64_t traversal;
    Py_ssize_t n, cap, max_nodes;
    int32_t *edges;          /* pairs (holder, held) */
    Py_ssize_t n_edges, cap_edges;
    int pass;
    int truncated;
} WalkObject;

/* Reach the object of slot ``s``: its node number, -1 when max_nodes is hit, -2 on error. */
static int32_t
reach(WalkObject *w, Slot *s)
{
    if (s->node >= 0)
        return s->node;
    if (w->n >= w->max_nodes) {
        w->truncated = 1;
        return -1;
    }
    if (w->n == w->cap) {
        Py_ssize_t cap = w->cap ? w->cap * 2 : 256;
        PyObject **o = PyMem_RawRealloc(w->obj, (size_t)cap * sizeof(PyObject *));
        if (o == NULL) { PyErr_NoMemory(); return -2; }
        w->obj = o;
        uint8_t *k = PyMem_RawRealloc(w->kind, (size_t)cap);
        if (k == NULL) { PyErr_NoMemory(); return -2; }
        w->kind = k;
        int32_t *a = PyMem_RawRealloc(w->added, (size_t)cap * sizeof(int32_t));
        if (a == NULL) { PyErr_NoMemory(); return -2; }
        w->added = a;
        uint64_t *st = PyMem_RawRealloc(w->stamp, (size_t)cap * sizeof(uint64_t));
        if (st == NULL) { PyErr_NoMemory(); return -2; }
        w->stamp = st;
        w->cap = cap;
    }
    int32_t node = (int32_t)w->n++;
    w->obj[node] = s->key;
    w->kind[node] = s->kind;
    w->added[node] = w->pass;
    w->stamp[node] = 0;
    s->node = node;
    return node;
}

static int
push_edge(WalkObject *w, int32_t holder, int32_t held)
{
    if (w->n_edges == w->cap_edges) {
        Py_ssize_t cap = w->cap_edges ? w->cap_edges * 2 : 512;
        int32_t *e = PyMem_RawRealloc(w->edges, (size_t)cap * 2 * sizeof(int32_t));
        if (e == NULL) { PyErr_NoMemory(); return -1; }
        w->edges = e;
        w->cap_edges = cap;
    }
    w->edges[2 * w->n_edges] = holder;
    w->edges[2 * w->n_edges + 1] = held;
    w->n_edges++;
    return 0;
}

/* Whether a reference to node ``held`` may not have been recorded yet: every pass traverses every object,
   so one to an object reached two passes ago or earlier was recorded then (or by the pass after). */
static inline int
edge_may_be_new(WalkObject *w, int32_t held)
{
    int32_t a = w->added[held];
    return a >= w->pass - 1 && (a > 0 || w->pass == 1);
}

typedef struct {
    int32_t *v;
    Py_ssize_t n, cap;
} Buf;

static int
buf_push(Buf *b, int32_t x)
{
    if (b->n == b->cap) {
        Py_ssize_t cap = b->cap ? b->cap * 2 : 16;
        int32_t *v = PyMem_RawRealloc(b->v, (size_t)cap * sizeof(int32_t));
        if (v == NULL) { PyErr_NoMemory(); return -1; }
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = x;
    return 0;
}

typedef struct {
    WalkObject *w;
    PyObject *self;     /* the object traversed */
    PyObject *inner;    /* the dict looked through, while it is */
    PyObject *own;      /* self's instance dict, when the search does not know it */
    Buf hits;           /* nodes self refers to */
    Buf dict_hits;      /* per dict looked through: its index in ``dicts``, its hits, -1 */
    PyObject **dicts;
    Py_ssize_t n_dicts, cap_dicts;
} Visit;

/* The instance dict of ``o`` if it has one already (never makes one: 3.11+ keeps attributes inline until
   __dict__ is asked for), read where CPython keeps it: the managed-dict word before the object's header
   (3.11 a dict pointer, 3.12 a dict-or-values word tagged 1 for values, 3.13+ a dict pointer), else at
   tp_dictoffset. Borrowed, or NULL. */
static inline PyObject *
instance_dict(PyObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
#if defined(Py_GIL_DISABLED) || PY_VERSION_HEX >= 0x030F0000
    (void)tp;
    return NULL;
#else
#  ifdef Py_TPFLAGS_MANAGED_DICT
    if (tp->tp_flags & Py_TPFLAGS_MANAGED_DICT) {
#    if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000
        uintptr_t dv = ((uintptr_t *)o)[-3];
        return (dv & 1) ? NULL : (PyObject *)dv;
#    else
        return ((PyObject **)o)[-3];
#    endif
    }
#  endif
    if (tp->tp_dictoffset > 0)
        return *(PyObject **)((char *)o + tp->tp_dictoffset);
    return NULL;
#endif
}

static int
visit_inner(PyObject *c, void *arg)
{
    Visit *v = (Visit *)arg;
    if (c == v->inner || c == v->self)
        return 0;
    Slot *s = find(&v->w->t, c);
    if (s == NULL || s->node < 0 || s->kind != K_PLAIN)
        return 0;
    return buf_push(&v->dict_hits, s->node);
}

static int
visit_hit(PyObject *c, void *arg)
{
    Visit *v = (Visit *)arg;
    if (c == v->self)
        return 0;
    Slot *s = find(&v->w->t, c);
    if (s == NULL) {
        if (c == v->own && v->inner == NULL && PyDict_CheckExact(c)) {
            Py_ssize_t mark = v->dict_hits.n;
            if (buf_push(&v->dict_hits, (int32_t)v->n_dicts) < 0)
                return -1;
            v->inner = c;
            int r = Py_TYPE(c)->tp_traverse(c, visit_inner, v);
            v->inner = NULL;
            if (r < 0)
                return -1;
            if (v->dict_hits.n == mark + 1) {  /* nothing in it was reached */
                v->dict_hits.n = mark;
                return 0;
            }
            if (v->n_dicts == v->cap_dicts) {
                Py_ssize_t cap = v->cap_dicts ? v->cap_dicts * 2 : 8;
                PyObject **d = PyMem_RawRealloc(v->dicts, (size_t)cap * sizeof(PyObject *));
                if (d == NULL) { PyErr_NoMemory(); return -1; }
                v->dicts = d;
                v->cap_dicts = cap;
            }
            v->dicts[v->n_dicts++] = c;
            return buf_push(&v->dict_hits, -1);
        }
        return 0;
    }
    if (s->node < 0 || s->kind != K_PLAIN)
        return 0;
    WalkObject *w = v->w;
    if (w->stamp[s->node] == w->traversal)  /* a list holding it twice: one hit */
        return 0;
    w->stamp[s->node] = w->traversal;
    return buf_push(&v->hits, s->node);
}

static PyObject *
type_dict(PyObject *t)  /* new reference or NULL (no error set) */
{
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *d = PyType_GetDict((PyTypeObject *)t);
    if (d == NULL)
        PyErr_Clear();
    return d;
#else
    PyObject *d = ((PyTypeObject *)t)->tp_dict;
    Py_XINCREF(d);
    return d;
#endif
}

static int
walk_one(WalkObject *w, PyObject *o, Visit *v)
{
    Slot *so;
    if (PyType_Check(o)) {  /* a class: reached only as the root of its namespace */
        PyObject *d = type_dict(o);
        if (d == NULL)
            return 0;
        Slot *sd = find(&w->t, d);
        Py_DECREF(d);
        if (sd == NULL || sd->node < 0 || sd->kind != K_PLAIN)
            return 0;
        so = find(&w->t, o);
        if (so != NULL && so->kind == K_BLOCKED)
            return 0;
        if (so == NULL && (so = insert(&w->t, o, K_CLASS, 1)) == NULL)
            return -1;
        int32_t holder = reach(w, so);
        if (holder == -2)
            return -1;
        if (holder >= 0 && edge_may_be_new(w, sd->node))
            return push_edge(w, holder, sd->node);
        return 0;
    }
    /* every object on the collector's lists (or from gc.get_objects()) has a tp_traverse */
    v->self = o;
    w->traversal++;
    v->own = instance_dict(o);
    if (v->own != NULL && find(&w->t, v->own) != NULL)
        v->own = NULL;  /* known: an ordinary hit, or a root */
    v->hits.n = 0;
    v->dict_hits.n = 0;
    v->n_dicts = 0;
    if (Py_TYPE(o)->tp_traverse(o, visit_hit, v) < 0)
        return -1;
    if (v->hits.n == 0 && v->n_dicts == 0)
        return 0;
    so = find(&w->t, o);
    if (so != NULL && so->kind == K_BLOCKED)
        return 0;
    if (so == NULL && (so = insert(&w->t, o, K_PLAIN, 1)) == NULL)
        return -1;
    int32_t holder = reach(w, so);
    if (holder == -2)
        return -1;
    if (holder < 0)
        return 0;
    for (Py_ssize_t k = 0; k < v->hits.n; k++)
        if (edge_may_be_new(w, v->hits.v[k]) && push_edge(w, holder, v->hits.v[k]) < 0)
            return -1;
    /* the dicts looked through: held by o, each holding its hits */
    for (Py_ssize_t k = 0; k < v->dict_hits.n; k++) {
        PyObject *d = v->dicts[v->dict_hits.v[k]];
        Slot *sd = insert(&w->t, d, K_PLAIN, 1);
        if (sd == NULL)
            return -1;
        int32_t dn = reach(w, sd);
        if (dn == -2)
            return -1;
        if (dn >= 0 && push_edge(w, holder, dn) < 0)
            return -1;
        for (k++; v->dict_hits.v[k] >= 0; k++)
            if (dn >= 0 && push_edge(w, dn, v->dict_hits.v[k]) < 0)
                return -1;
    }
    return 0;
}

static PyObject *
walk_run(WalkObject *w, PyObject *args)
{
    int newest_first;
    if (!PyArg_ParseTuple(args, "p:run", &newest_first))
        return NULL;
    Py_ssize_t before = w->n;
    w->pass++;
    Visit v;
    memset(&v, 0, sizeof(v));
    v.w = w;
    Cursor c;
    cursor_start(&c, w->heap, w->heads, w->sentinel, newest_first);
    int err = 0;
    PyObject *o;
    while (!err && (o = cursor_next(&c)) != NULL)
        err = walk_one(w, o, &v) < 0;  /* tp_traverse runs no Python code: the heap holds still */
    PyMem_RawFree(v.hits.v);
    PyMem_RawFree(v.dict_hits.v);
    PyMem_RawFree(v.dicts);
    if (err)
        return NULL;
    return PyLong_FromSsize_t(w->n - before);
}

static PyObject *
walk_nodes(WalkObject *w, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyList_New(w->n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < w->n; k++) {
        Py_INCREF(w->obj[k]);
        PyList_SET_ITEM(out, k, w->obj[k]);
    }
    return out;
}

static PyObject *
walk_kinds(WalkObject *w, PyObject *Py_UNUSED(ignored))
{
    return PyBytes_FromStringAndSize((const char *)w->kind, w->n);
}

static PyObject *
walk_edges(WalkObject *w, PyObject *Py_UNUSED(ignored))
{
    return PyBytes_FromStringAndSize((const char *)w->edges, w->n_edges * 2 * (Py_ssize_t)sizeof(int32_t));
}

typedef struct {
    Table *t;
    Py_ssize_t *count;
} Count;

static int
visit_count(PyObject *c, void *arg)
{
    Count *k = (Count *)arg;
    Slot *s = find(k->t, c);
    if (s != NULL)
        k->count[s->node]++;
    return 0;
}

static PyObject *
walk_outside(WalkObject *w, PyObject *args)
{
    PyObject *objs, *holders;
    if (!PyArg_ParseTuple(args, "O!O!:outside", &PyList_Type, &objs, &PyTuple_Type, &holders))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(objs);
    Table t = {NULL, 0, 0, 0, NULL, 0};
    Py_ssize_t *count = PyMem_RawCalloc((size_t)n + 1, sizeof(Py_ssize_t));
    PyObject *out = NULL;
    if (count == NULL || table_init(&t, n) < 0) {
        if (count == NULL)
            PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        Slot *s = insert(&t, PyList_GET_ITEM(objs, k), K_PLAIN, 0);
        if (s == NULL)
            goto done;
        if (s->node < 0) {
            s->node = (int32_t)k;
            if (find(&w->t, s->key) != NULL)
                count[k]++;  /* this Walk's reference */
        }
        count[s->node]++;  /* objs' own */
    }
    Count c = {&t, count};
    Cursor cur;
    cursor_start(&cur, w->heap, w->heads, w->sentinel, 0);
    PyObject *o;
    while ((o = cursor_next(&cur)) != NULL) {
        traverseproc traverse = Py_TYPE(o)->tp_traverse;
        if (PyObject_IS_GC(o) && traverse != NULL && traverse(o, visit_count, &c) < 0)
            goto done;
    }
    for (Py_ssize_t h = -1; h < PyTuple_GET_SIZE(holders); h++) {
        PyObject *lst = h < 0 ? w->heap : PyTuple_GET_ITEM(holders, h);  /* the heap list holds one too */
        if (lst == NULL)
            continue;
        if (!PyList_Check(lst)) {
            PyErr_SetString(PyExc_TypeError, "outside: holders must be a tuple of lists");
            goto done;
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(lst); i++) {
            Slot *s = find(&t, PyList_GET_ITEM(lst, i));
            if (s != NULL)
                count[s->node]++;
        }
    }
    out = PyList_New(n);
    if (out == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < n; k++) {
        Slot *s = find(&t, PyList_GET_ITEM(objs, k));
        PyObject *v = PyLong_FromSsize_t(Py_REFCNT(s->key) - count[s->node]);
        if (v == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, k, v);
    }
done:
    table_free(&t, 0);
    PyMem_RawFree(count);
    return out;
}

static PyObject *
walk_truncated(WalkObject *w, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(w->truncated);
}

static PyObject *
walk_direct(WalkObject *w, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(w->heap == NULL);
}

static PyObject *
walk_sizeof(WalkObject *w, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t bytes = (Py_ssize_t)sizeof(WalkObject) + (w->t.mask + 1) * (Py_ssize_t)sizeof(Slot)
        + w->cap * (Py_ssize_t)(sizeof(PyObject *) + 1 + sizeof(int32_t) + sizeof(uint64_t))
        + w->cap_edges * 2 * (Py_ssize_t)sizeof(int32_t);
    return PyLong_FromSsize_t(bytes);
}

static int
load(WalkObject *w, PyObject *seq, uint8_t kind, const char *what)
{
    PyObject *fast = PySequence_Fast(seq, what);
    if (fast == NULL)
        return -1;
    for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(fast); k++) {
        Slot *s = insert(&w->t, PySequence_Fast_GET_ITEM(fast, k), kind, 1);
        if (s == NULL || (kind == K_PLAIN && s->node < 0 && reach(w, s) == -2)) {
            Py_DECREF(fast);
            return -1;
        }
    }
    Py_DECREF(fast);
    return 0;
}

static void
walk_dealloc(WalkObject *w)
{
    table_free(&w->t, 1);
    Py_XDECREF(w->heap);
    Py_XDECREF(w->sentinel);
    PyMem_RawFree(w->obj);
    PyMem_RawFree(w->kind);
    PyMem_RawFree(w->added);
    PyMem_RawFree(w->stamp);
    PyMem_RawFree(w->edges);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyObject *
walk_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"seeds", "roots", "blocked", "max_nodes", "heap", NULL};
    PyObject *seeds, *roots, *blocked, *heap = Py_None;
    Py_ssize_t max_nodes = 1 << 22;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO|nO:Walk", kwlist, &seeds, &roots, &blocked, &max_nodes, &heap))
        return NULL;
    if (max_nodes < 1 || max_nodes > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "Walk: max_nodes=%zd must be between 1 and 2**31-1", max_nodes);
        return NULL;
    }
    if (heap != Py_None && !PyList_Check(heap)) {
        PyErr_SetString(PyExc_TypeError, "Walk: heap must be a list of objects, or None to walk the collector's lists");
        return NULL;
    }
    WalkObject *w = (WalkObject *)type->tp_alloc(type, 0);
    if (w == NULL)
        return NULL;
    w->max_nodes = max_nodes;
    if (table_init(&w->t, 512) < 0) {
        Py_DECREF(w);
        return NULL;
    }
    /* seeds first (node numbers 0..k-1), then roots and blocked objects that are not seeds */
    if (load(w, seeds, K_PLAIN, "Walk: seeds must be a sequence") < 0
        || load(w, roots, K_ROOT, "Walk: roots must be a sequence") < 0
        || load(w, blocked, K_BLOCKED, "Walk: blocked must be a sequence") < 0) {
        Py_DECREF(w);
        return NULL;
    }
    if (heap != Py_None) {
        Py_INCREF(heap);
        w->heap = heap;
    }
    else {
        if (!gc_heads(w->heads)) {
            Py_DECREF(w);
            PyErr_SetString(PyExc_RuntimeError, "Walk: the collector's lists cannot be walked on this Python; pass heap=");
            return NULL;
        }
        w->sentinel = PyList_New(0);  /* last in generation 0: everything older is the heap */
        if (w->sentinel == NULL) {
            Py_DECREF(w);
            return NULL;
        }
    }
    return (PyObject *)w;
}

static Py_ssize_t
walk_len(WalkObject *w)
{
    return w->n;
}

static PyMethodDef walk_methods[] = {
    {"run", (PyCFunction)walk_run, METH_VARARGS,
     "run(newest_first) -> int: one pass over the heap; the number of objects reached in it."},
    {"nodes", (PyCFunction)walk_nodes, METH_NOARGS, "nodes() -> list: the reached objects, seeds first."},
    {"kinds", (PyCFunction)walk_kinds, METH_NOARGS, "kinds() -> bytes: 0 plain, 1 root, 3 class, per reached object."},
    {"edges", (PyCFunction)walk_edges, METH_NOARGS,
     "edges() -> bytes: native int32 pairs (holder, held) of reached objects' numbers; may repeat."},
    {"outside", (PyCFunction)walk_outside, METH_VARARGS,
     "outside(objs, holders) -> list[int]: per object, its references from outside the heap, this Walk,\n"
     "``objs`` and the lists of the tuple ``holders``."},
    {"__sizeof__", (PyCFunction)walk_sizeof, METH_NOARGS, "Bytes of the tables."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef walk_getset[] = {
    {"truncated", (getter)walk_truncated, NULL, "whether max_nodes stopped the search", NULL},
    {"direct", (getter)walk_direct, NULL, "whether it walks the collector's lists (no heap list)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods walk_as_sequence = {
    .sq_length = (lenfunc)walk_len,
};

static PyTypeObject WalkType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tokdiag._heapwalk.Walk",
    .tp_basicsize = sizeof(WalkObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Walk(seeds, roots, blocked, max_nodes=2**22, heap=None): the backward search of why_alive.",
    .tp_new = walk_new,
    .tp_dealloc = (destructor)walk_dealloc,
    .tp_methods = walk_methods,
    .tp_getset = walk_getset,
    .tp_as_sequence = &walk_as_sequence,
};

/* ------------------------------------------------------------------ module functions */

static PyObject *
newest(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *types, *heap = Py_None, *until = Py_None;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "O!n|OO:newest", &PyList_Type, &types, &limit, &heap, &until))
        return NULL;
    if (until != Py_None && !(PyObject_IS_GC(until) && PyObject_GC_IsTracked(until))) {
        PyErr_SetString(PyExc_TypeError, "newest: until must be an object the collector tracks, or None");
        return NULL;
    }
    GCHead *heads[4];
    if (heap != Py_None && !PyList_Check(heap)) {
        PyErr_SetString(PyExc_TypeError, "newest: heap must be a list, or None");
        return NULL;
    }
    if (heap == Py_None && !gc_heads(heads)) {
        PyErr_SetString(PyExc_RuntimeError, "newest: the collector's lists cannot be walked on this Python; pass heap=");
        return NULL;
    }
    Table t = {NULL, 0, 0, 0, NULL, 0};
    if (table_init(&t, PyList_GET_SIZE(types)) < 0)
        return NULL;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(types); k++)
        if (insert(&t, PyList_GET_ITEM(types, k), K_PLAIN, 0) == NULL) {
            table_free(&t, 0);
            return NULL;
        }
    PyObject *out = PyList_New(0);  /* tracked: the walk below starts before it */
    Cursor c;
    cursor_start(&c, heap == Py_None ? NULL : heap, heads, out, 1);
    c.until = until == Py_None ? NULL : until;
    PyObject *o;
    while (out != NULL && PyList_GET_SIZE(out) < limit && (o = cursor_next(&c)) != NULL) {
        /* appending allocates, but no tracked object: the lists walked do not change */
        if (find(&t, (PyObject *)Py_TYPE(o)) != NULL && PyList_Append(out, o) < 0)
            Py_CLEAR(out);
    }
    table_free(&t, 0);
    return out;
}

static PyObject *
direct(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    GCHead *heads[4];
    return PyBool_FromLong(gc_heads(heads));
}

static PyMethodDef module_methods[] = {
    {"newest", newest, METH_VARARGS,
     "newest(types, limit, heap=None, until=None) -> list: up to ``limit`` objects whose type is one of the list\n"
     "``types`` (by address), newest first: from the end of the list ``heap``, or of the collector's lists; the\n"
     "walk stops at the tracked object ``until``."},
    {"direct", direct, METH_NOARGS, "direct() -> bool: whether the collector's lists can be walked here."},
    {NULL, NULL, 0, NULL},
};

static int
heapwalk_exec(PyObject *module)
{
    if (PyType_Ready(&WalkType) < 0)
        return -1;
    return PyModule_AddType(module, &WalkType);
}

static PyModuleDef_Slot heapwalk_slots[] = {
    {Py_mod_exec, heapwalk_exec},
    {0, NULL},
};

static struct PyModuleDef heapwalk_module = {
    PyModuleDef_HEAD_INIT, "tokdiag._heapwalk",
    "C loops of why_alive's search (see tokdiag.analysis.retention.walk).", 0,
    module_methods, heapwalk_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__heapwalk(void)
{
    return PyModuleDef_Init(&heapwalk_module);
}
