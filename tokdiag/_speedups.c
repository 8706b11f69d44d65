/* tokdiag._speedups: the C loops of the heap census and of deep sizing.
 *
 * Optional: built by ``pip install`` when a C compiler is there; without it
 * tokdiag runs pure Python/numpy code with the same results
 * (tokdiag/probes/census.py, tokdiag/sizing.py).
 *
 * IdSet: the identities a snapshot has counted, a bitmap of the address space (see below).
 *
 * referents(obj, start, count) -> list: a slice of gc.get_referents(obj), without listing
 * the rest (see below).
 *
 * count(heap, owned, align[, limit[, untracked[, skip]]]) -> [(type, count, bytes, owned_bytes, unsized), ...]
 *
 * For every object of the list ``heap``: its type (a pointer-keyed hash
 * table, no Python hashing, so a metaclass's __hash__ never runs), one more
 * count, and its C-level size (below) rounded up to ``align``. ``owned`` is
 * an IdSet, a buffer of sorted int64 ids, or None: the bytes of the objects
 * in it are added to ``owned_bytes`` as well. ``unsized`` counts the objects
 * whose size could not be read (their C __sizeof__ raised, or said more than
 * ``limit`` bytes): they count 0 bytes.
 *
 * With ``untracked``, the objects the gc does not track that the heap's
 * objects reference (directly or through untracked tuples and dicts) are
 * counted too, each once, classes excepted; the referents of the objects in
 * the sequence ``skip`` are not walked. Referents come from tp_traverse,
 * and an exact dict is read entry by entry (3.11+ dict_traverse skips the
 * keys of a dict of str keys). Only objects with more than one reference
 * are deduplicated, in paged bitmaps of addresses (PagedBits); the owned
 * ids are copied into such bitmaps too; referents are prefetched and
 * visited a few later (the walk is bound by cache misses on them).
 *
 * size(obj[, limit]) -> int: the C-level size of one object (not rounded),
 * -1 when it cannot be read.
 *
 * types(heap) -> list: the distinct types of the objects of ``heap``, by address.
 *
 * The C-level size never runs Python code of the measured program. It is
 * the first ``__sizeof__`` on the type's MRO that is a C method of a class
 * the type really inherits from (dict.__sizeof__ for a dict subclass,
 * object.__sizeof__ at the latest: tp_basicsize + tp_itemsize * Py_SIZE),
 * plus the GC header and pre-header bytes sys.getsizeof adds. A
 * ``__sizeof__`` written in Python is passed over (pandas' runs
 * memory_usage(deep=True) and builds Series; a MagicMock's records the call
 * and makes a child mock), and so is a C method borrowed from an unrelated
 * class (it would read a foreign struct). For every other type this is
 * exactly sys.getsizeof (tests/test_census_exact.py). Decided per type on
 * its first object, as the pure-Python path in tokdiag/sizing.py does:
 *
 * - FIXED: the C method is object.__sizeof__ and ``tp_itemsize == 0``: every
 *   instance has the same size, no call at all;
 * - CMETH: a C method taking no arguments (dict, list, tuple, set, ...):
 *   that C function called directly;
 * - CCALL: any other C method: called through its descriptor.
 *
 * Only exceptions that are not ``Exception`` (KeyboardInterrupt) propagate.
 *
 * atom_hash(obj[, depth]) -> int | None: a hash of ``obj`` when it is a tree
 * of exact builtin atoms (str, bytes, int, float, bool, None) in exact
 * tuples, lists, sets, frozensets and dicts, at most ``depth`` containers
 * deep; None for anything else. Types are compared by identity, so only
 * CPython's own hash functions run, in one C loop: no __hash__ of the
 * program's, and no other thread can change a container half-way.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#ifndef _WIN32
#include <sys/mman.h>
#endif
#if !defined(MAP_ANONYMOUS) && defined(MAP_ANON)
#define MAP_ANONYMOUS MAP_ANON
#endif

/* ------------------------------------------------------------------ IdSet
 *
 * A set of object addresses: what ``id()`` returns, without making an int
 * object per id. It is a bitmap: one bit per 8 bytes of address space (an
 * object's address is a multiple of 8 and two live objects are at least 16
 * bytes apart, so no two share a bit), kept only for the 64 KiB regions of
 * the address space where some object was added: a 1 KiB chunk per region,
 * found through a small open-addressing directory. An id therefore costs at
 * most 1/64 of the memory the objects themselves span, whatever their number:
 * about 6 MiB for the ~5M objects a 400 MiB heap holds, where a hash table of
 * 8-byte ids at most half full took 64-128 MiB, and twice that while it grew
 * (issue 9, E15: a snapshot's own peak). A Python set of ints (the fallback)
 * costs ~60 bytes per id and leaves the freed ints in the allocator of the
 * very process being measured (+14.6 MiB RSS that stayed, measured on a
 * cl100k_base Encoding's ~200k ids).
 *
 * Chunks are carved from slabs; a slab or directory of 256 KiB or more is
 * mapped from the OS directly, so freeing the set gives the pages back and
 * leaves the allocator's state as the workload left it. A small set (a few
 * regions) lives in one 4 KiB block.
 *
 * Holds no reference to any object: valid while the objects it saw are
 * alive (one snapshot).
 */

/* Bytes from which a table is mapped, not malloc'ed: glibc mmaps a request of 128 KiB or more
 * itself, and freeing such a chunk raises its mmap threshold for the rest of the process (the
 * measured program's later allocations of that size would then stay in the heap). */
#define IDSET_MAP_MIN ((size_t)1 << 17)
#define REGION_SHIFT 16                     /* 64 KiB of address space per chunk */
#define CHUNK_WORDS (((size_t)1 << (REGION_SHIFT - 3)) / 64) /* one bit per 8 bytes: 128 words, 1 KiB */
#define FIRST_SLAB_CHUNKS 4                 /* the first slab: 4 KiB, malloc'ed */
#define SLAB_CHUNKS 256                     /* later slabs: 256 KiB, mapped */

typedef struct {
    uint64_t *words;
    size_t capacity; /* in uint64 words */
    int mapped;
} Block;

typedef struct {
    PyObject_HEAD
    uint64_t *dkeys;    /* directory: region + 1, 0 = empty */
    uint64_t **dchunks; /* directory: the region's chunk */
    size_t dcap;        /* a power of two */
    int dshift;         /* 64 - log2(dcap) */
    int dkeys_mapped, dchunks_mapped;
    size_t dused;
    Block *slabs;       /* chunk memory */
    size_t nslabs, slabs_cap;
    size_t slab_free;   /* chunks left in the last slab */
    uint64_t last_region; /* the region looked up last (+1; 0 = none) and its chunk */
    uint64_t *last_chunk;
    Py_ssize_t used;    /* ids in the set */
} IdSetObject;

static PyTypeObject IdSetType;

static uint64_t *
slots_alloc(size_t capacity, int *mapped)
{
    size_t bytes = capacity * sizeof(uint64_t);
#if defined(MAP_ANONYMOUS)
    if (bytes >= IDSET_MAP_MIN) {
        void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            PyErr_NoMemory();
            return NULL;
        }
        *mapped = 1;
        return (uint64_t *)p; /* zero-filled by the OS */
    }
#endif
    *mapped = 0;
    uint64_t *p = PyMem_Calloc(capacity, sizeof(uint64_t));
    if (p == NULL)
        PyErr_NoMemory();
    return p;
}

static void
slots_free(void *slots, size_t capacity, int mapped)
{
    if (slots == NULL)
        return;
#if defined(MAP_ANONYMOUS)
    if (mapped) {
        munmap(slots, capacity * sizeof(uint64_t));
        return;
    }
#endif
    (void)capacity;
    (void)mapped;
    PyMem_Free(slots);
}

static inline size_t
dir_index(const IdSetObject *s, uint64_t k)
{
    return (size_t)((k * 0x9E3779B97F4A7C15ULL) >> s->dshift);
}

static int
dir_resize(IdSetObject *s, size_t capacity)
{
    int kmapped, cmapped;
    uint64_t *keys = slots_alloc(capacity, &kmapped);
    if (keys == NULL)
        return -1;
    uint64_t **chunks = (uint64_t **)slots_alloc(capacity, &cmapped);
    if (chunks == NULL) {
        slots_free(keys, capacity, kmapped);
        return -1;
    }
    int shift = 64;
    for (size_t c = capacity; c > 1; c >>= 1)
        shift--;
    uint64_t *old_keys = s->dkeys;
    uint64_t **old_chunks = s->dchunks;
    size_t old_cap = s->dcap;
    int old_kmapped = s->dkeys_mapped, old_cmapped = s->dchunks_mapped;
    s->dkeys = keys;
    s->dchunks = chunks;
    s->dcap = capacity;
    s->dshift = shift;
    s->dkeys_mapped = kmapped;
    s->dchunks_mapped = cmapped;
    size_t mask = capacity - 1;
    for (size_t j = 0; j < old_cap; j++) {
        uint64_t k = old_keys[j];
        if (k == 0)
            continue;
        size_t i = dir_index(s, k);
        while (keys[i] != 0)
            i = (i + 1) & mask;
        keys[i] = k;
        chunks[i] = old_chunks[j];
    }
    slots_free(old_keys, old_cap, old_kmapped);
    slots_free(old_chunks, old_cap, old_cmapped);
    return 0;
}

/* A fresh zeroed chunk from the slabs, NULL (with MemoryError) when out of memory. */
static uint64_t *
chunk_new(IdSetObject *s)
{
    if (s->slab_free == 0) {
        if (s->nslabs == s->slabs_cap) {
            size_t cap = s->slabs_cap ? 2 * s->slabs_cap : 8;
            Block *grown = PyMem_Realloc(s->slabs, cap * sizeof(Block));
            if (grown == NULL) {
                PyErr_NoMemory();
                return NULL;
            }
            s->slabs = grown;
            s->slabs_cap = cap;
        }
        size_t chunks = s->nslabs ? SLAB_CHUNKS : FIRST_SLAB_CHUNKS;
        Block *b = &s->slabs[s->nslabs];
        b->capacity = chunks * CHUNK_WORDS;
        b->words = slots_alloc(b->capacity, &b->mapped);
        if (b->words == NULL)
            return NULL;
        s->nslabs++;
        s->slab_free = chunks;
    }
    Block *b = &s->slabs[s->nslabs - 1];
    return b->words + b->capacity - CHUNK_WORDS * s->slab_free--;
}

/* The chunk of ``region``; with ``create``, made when missing (NULL only on error); without,
 * NULL when the region has no id. */
static uint64_t *
chunk_of(IdSetObject *s, uint64_t region, int create)
{
    uint64_t k = region + 1;
    if (k == s->last_region)
        return s->last_chunk;
    size_t mask = s->dcap - 1;
    size_t i = dir_index(s, k);
    for (;; i = (i + 1) & mask) {
        uint64_t v = s->dkeys[i];
        if (v == k) {
            s->last_region = k;
            s->last_chunk = s->dchunks[i];
            return s->last_chunk;
        }
        if (v == 0)
            break;
    }
    if (!create)
        return NULL;
    if ((s->dused + 1) * 2 > s->dcap) {
        if (dir_resize(s, s->dcap * 2) < 0)
            return NULL;
        mask = s->dcap - 1;
        for (i = dir_index(s, k); s->dkeys[i] != 0; i = (i + 1) & mask)
            ;
    }
    uint64_t *chunk = chunk_new(s);
    if (chunk == NULL)
        return NULL;
    s->dkeys[i] = k;
    s->dchunks[i] = chunk;
    s->dused++;
    s->last_region = k;
    s->last_chunk = chunk;
    return chunk;
}

static inline int
ctz64(uint64_t x) /* trailing zero bits of a nonzero word */
{
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctzll(x);
#else
    int n = 0;
    for (; !(x & 1); x >>= 1)
        n++;
    return n;
#endif
}

#define BIT_OF(key) (((key) >> 3) & (CHUNK_WORDS * 64 - 1))

static int
idset_has(IdSetObject *s, uint64_t key)
{
    uint64_t *chunk = chunk_of(s, key >> REGION_SHIFT, 0);
    if (chunk == NULL)
        return 0;
    size_t bit = BIT_OF(key);
    return (chunk[bit >> 6] >> (bit & 63)) & 1;
}

/* 1 when added, 0 when already there, -1 on error. */
static int
idset_add(IdSetObject *s, uint64_t key)
{
    uint64_t *chunk = chunk_of(s, key >> REGION_SHIFT, 1);
    if (chunk == NULL)
        return -1;
    size_t bit = BIT_OF(key);
    uint64_t m = (uint64_t)1 << (bit & 63);
    if (chunk[bit >> 6] & m)
        return 0;
    chunk[bit >> 6] |= m;
    s->used++;
    return 1;
}

#define ADDR(o) ((uint64_t)(uintptr_t)(o))

static void
idset_clear_memory(IdSetObject *s)
{
    for (size_t j = 0; j < s->nslabs; j++)
        slots_free(s->slabs[j].words, s->slabs[j].capacity, s->slabs[j].mapped);
    PyMem_Free(s->slabs);
    s->slabs = NULL;
    s->nslabs = s->slabs_cap = s->slab_free = 0;
    slots_free(s->dkeys, s->dcap, s->dkeys_mapped);
    slots_free(s->dchunks, s->dcap, s->dchunks_mapped);
    s->dkeys = NULL;
    s->dchunks = NULL;
    s->dcap = 0;
}

static PyObject *
idset_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) || (kwds != NULL && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "IdSet() takes no arguments");
        return NULL;
    }
    IdSetObject *s = (IdSetObject *)type->tp_alloc(type, 0);
    if (s == NULL)
        return NULL;
    s->dkeys = NULL;
    s->dchunks = NULL;
    s->dcap = 0;
    s->dused = 0;
    s->slabs = NULL;
    s->nslabs = s->slabs_cap = s->slab_free = 0;
    s->last_region = 0;
    s->last_chunk = NULL;
    s->used = 0;
    if (dir_resize(s, 16) < 0) {
        Py_DECREF(s);
        return NULL;
    }
    return (PyObject *)s;
}

static void
idset_dealloc(IdSetObject *s)
{
    idset_clear_memory(s);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static Py_ssize_t
idset_len(IdSetObject *s)
{
    return s->used;
}

static int
idset_contains(IdSetObject *s, PyObject *o)
{
    return idset_has(s, ADDR(o));
}

/* Whether a new object goes to ``wide`` (take_new): an exact dict, list, tuple, set or
 * frozenset with at least ``wide_min`` items. Sizes read from the struct: no code runs. */
static inline int
is_wide(PyObject *o, Py_ssize_t wide_min)
{
    PyTypeObject *tp = Py_TYPE(o);
    Py_ssize_t n;
    if (tp == &PyDict_Type)
        n = PyDict_GET_SIZE(o);
    else if (tp == &PyList_Type || tp == &PyTuple_Type)
        n = Py_SIZE(o);
    else if (tp == &PySet_Type || tp == &PyFrozenSet_Type)
        n = PySet_GET_SIZE(o);
    else
        return 0;
    return n >= wide_min;
}

/* take_new(objs, skip[, wide, wide_min]) -> list: the objects of ``objs`` not in the set
 * yet (each once, in order), which are added; objects whose exact type is in the frozenset
 * ``skip``, or that are classes, are neither returned nor added. With a list ``wide``, new
 * exact dicts, lists, tuples, sets and frozensets of at least ``wide_min`` items are added to
 * the set and appended to ``wide`` instead of the result (the caller reads their items in
 * slices). Types are compared by identity: no Python code (a metaclass's __hash__ or __eq__)
 * runs inside the loop. */
#define SKIP_MAX 64

static PyObject *
idset_take_new(IdSetObject *s, PyObject *args)
{
    PyObject *objs, *skip, *wide = Py_None;
    Py_ssize_t wide_min = PY_SSIZE_T_MAX;
    if (!PyArg_ParseTuple(args, "OO!|On:take_new", &objs, &PyFrozenSet_Type, &skip, &wide, &wide_min))
        return NULL;
    if (wide != Py_None && !PyList_CheckExact(wide)) {
        PyErr_SetString(PyExc_TypeError, "take_new: wide must be a list or None");
        return NULL;
    }
    PyObject *skipped[SKIP_MAX];
    Py_ssize_t nskip = 0;
    if (PySet_GET_SIZE(skip) > SKIP_MAX) {
        PyErr_Format(PyExc_ValueError, "take_new: skip has %zd types; at most %d", PySet_GET_SIZE(skip), SKIP_MAX);
        return NULL;
    }
    PyObject *it = PyObject_GetIter(skip);
    if (it == NULL)
        return NULL;
    PyObject *t;
    while ((t = PyIter_Next(it)) != NULL) {
        skipped[nskip++] = t; /* borrowed from the frozenset, which the call keeps alive */
        Py_DECREF(t);
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    PyObject *seq = PySequence_Fast(objs, "take_new: pass a list of objects");
    if (seq == NULL)
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    PyTypeObject *last = NULL;
    int last_skip = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(seq, i);
        Py_INCREF(o);
        PyTypeObject *tp = Py_TYPE(o);
        if (tp != last) {
            last = tp;
            last_skip = PyType_IsSubtype(tp, &PyType_Type);
            for (Py_ssize_t k = 0; k < nskip && !last_skip; k++)
                last_skip = skipped[k] == (PyObject *)tp;
        }
        int added = last_skip ? 0 : idset_add(s, ADDR(o));
        if (added > 0)
            added = PyList_Append(wide != Py_None && is_wide(o, wide_min) ? wide : out, o) < 0 ? -1 : 1;
        Py_DECREF(o);
        if (added < 0) {
            Py_DECREF(seq);
            Py_DECREF(out);
            return NULL;
        }
    }
    Py_DECREF(seq);
    return out;
}

/* One pass over an iterable of objects: with ``add``, add each (0 when done);
 * without, stop at the first one in the set (1) or report none (0). -1 on error. */
static int
idset_over(IdSetObject *s, PyObject *iterable, int add)
{
    PyObject *it = PyObject_GetIter(iterable);
    if (it == NULL)
        return -1;
    int result = 0;
    PyObject *o;
    while (result == 0 && (o = PyIter_Next(it)) != NULL) {
        uint64_t key = ADDR(o);
        Py_DECREF(o);
        if (add)
            result = idset_add(s, key) < 0 ? -1 : 0;
        else
            result = idset_has(s, key);
    }
    Py_DECREF(it);
    return result == 0 && PyErr_Occurred() ? -1 : result;
}

/* contains_any(iterable) -> bool: is any of the objects in the set? */
static PyObject *
idset_contains_any(IdSetObject *s, PyObject *iterable)
{
    int found = idset_over(s, iterable, 0);
    return found < 0 ? NULL : PyBool_FromLong(found);
}

/* add_all(iterable) -> None: add every object of the iterable. */
static PyObject *
idset_add_all(IdSetObject *s, PyObject *iterable)
{
    if (idset_over(s, iterable, 1) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ids() -> bytes: the ids as native-endian uint64, unsorted. */
static PyObject *
idset_ids(IdSetObject *s, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyBytes_FromStringAndSize(NULL, s->used * (Py_ssize_t)sizeof(uint64_t));
    if (out == NULL)
        return NULL;
    uint64_t *dst = (uint64_t *)PyBytes_AS_STRING(out);
    for (size_t j = 0; j < s->dcap; j++) {
        if (s->dkeys[j] == 0)
            continue;
        uint64_t base = (s->dkeys[j] - 1) << REGION_SHIFT;
        const uint64_t *chunk = s->dchunks[j];
        for (size_t w = 0; w < CHUNK_WORDS; w++)
            for (uint64_t bits = chunk[w]; bits; bits &= bits - 1)
                *dst++ = base | ((uint64_t)(w * 64 + (size_t)ctz64(bits)) << 3);
    }
    return out;
}

/* Bytes the set holds: directory and chunks, mapped or not. */
static size_t
idset_bytes(const IdSetObject *s)
{
    size_t bytes = 2 * s->dcap * sizeof(uint64_t) + s->slabs_cap * sizeof(Block);
    for (size_t j = 0; j < s->nslabs; j++)
        bytes += s->slabs[j].capacity * sizeof(uint64_t);
    return bytes;
}

static PyObject *
idset_sizeof(IdSetObject *s, PyObject *Py_UNUSED(ignored))
{
    size_t heap = s->slabs_cap * sizeof(Block);
    if (!s->dkeys_mapped)
        heap += 2 * s->dcap * sizeof(uint64_t);
    for (size_t j = 0; j < s->nslabs; j++)
        if (!s->slabs[j].mapped)
            heap += s->slabs[j].capacity * sizeof(uint64_t);
    return PyLong_FromSize_t(sizeof(IdSetObject) + heap);
}

static PyObject *
idset_nbytes(IdSetObject *s, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(idset_bytes(s));
}

static PyMethodDef idset_methods[] = {
    {"take_new", (PyCFunction)idset_take_new, METH_VARARGS,
     "take_new(objs, skip[, wide, wide_min]) -> list: the objects of ``objs`` not in the set yet\n"
     "(each once, in order); they are added. Objects whose exact type is in the frozenset ``skip``,\n"
     "and classes, are neither returned nor added. With a list ``wide``, new exact dicts, lists,\n"
     "tuples, sets and frozensets of at least ``wide_min`` items go to ``wide`` instead."},
    {"contains_any", (PyCFunction)idset_contains_any, METH_O,
     "contains_any(iterable) -> bool: whether any of the objects is in the set."},
    {"add_all", (PyCFunction)idset_add_all, METH_O, "add_all(iterable): add every object."},
    {"ids", (PyCFunction)idset_ids, METH_NOARGS, "ids() -> bytes: the ids as native uint64, unsorted."},
    {"__sizeof__", (PyCFunction)idset_sizeof, METH_NOARGS,
     "Size in the Python heap: a mapped table is outside it (it goes back to the OS when freed)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef idset_getset[] = {
    {"nbytes", (getter)idset_nbytes, NULL, "Bytes of memory the set holds (bitmap chunks and directory).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods idset_as_sequence = {
    .sq_length = (lenfunc)idset_len,
    .sq_contains = (objobjproc)idset_contains,
};

static PyTypeObject IdSetType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tokdiag._speedups.IdSet",
    .tp_basicsize = sizeof(IdSetObject),
    .tp_dealloc = (destructor)idset_dealloc,
    .tp_as_sequence = &idset_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "IdSet(): object identities, a bitmap of the address space (1 bit per 8 bytes, in 1 KiB\n"
              "chunks per 64 KiB region used); `obj in s` tests identity.",
    .tp_methods = idset_methods,
    .tp_getset = idset_getset,
    .tp_new = idset_new,
};


/* ------------------------------------------------------------------ referents in slices
 *
 * referents(obj, start, count) -> list: what gc.get_referents(obj) lists, from position
 * ``start``, at most ``count`` of them. The type's own tp_traverse is run, as
 * gc.get_referents runs it, with a visitor that skips the first ``start`` referents and stops
 * the traversal after ``count``: a dict of millions of entries is read in bounded slices
 * instead of one list of all of them. Each call traverses from the start again (the skipped
 * part costs a pointer comparison per referent). An object without GC support has none.
 */

typedef struct {
    PyObject *out;
    Py_ssize_t skip, left;
} SliceArg;

static int
slice_visit(PyObject *o, void *arg)
{
    SliceArg *a = (SliceArg *)arg;
    if (a->skip > 0) {
        a->skip--;
        return 0;
    }
    if (a->left <= 0)
        return 1; /* stop: the slice is full */
    if (PyList_Append(a->out, o) < 0)
        return -1;
    a->left--;
    return 0;
}

static PyObject *
referents_slice(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *obj;
    Py_ssize_t start, count;
    if (!PyArg_ParseTuple(args, "Onn:referents", &obj, &start, &count))
        return NULL;
    if (start < 0 || count < 0) {
        PyErr_Format(PyExc_ValueError, "referents: start=%zd, count=%zd: pass numbers >= 0", start, count);
        return NULL;
    }
    SliceArg a = {PyList_New(0), start, count};
    if (a.out == NULL)
        return NULL;
    traverseproc traverse = Py_TYPE(obj)->tp_traverse;
    if (PyObject_IS_GC(obj) && traverse != NULL && count > 0) {
        if (traverse(obj, slice_visit, &a) < 0 || PyErr_Occurred()) {
            Py_DECREF(a.out);
            return NULL;
        }
    }
    return a.out;
}

/* ------------------------------------------------------------------ C-level sizes */

enum { MODE_FIXED, MODE_CMETH, MODE_CCALL };

#define DEFAULT_LIMIT (1LL << 48) /* bytes; sizing.MAX_OBJECT_BYTES */

typedef struct {
    PyTypeObject *type; /* strong reference while the census runs */
    Py_ssize_t count;
    long long bytes;
    long long owned_bytes;
    Py_ssize_t unsized;
    int mode;
    long long fixed;     /* MODE_FIXED: size of every instance, not rounded; -1 when above the limit */
    PyCFunction meth;    /* MODE_CMETH: the C __sizeof__ */
    PyObject *descr;     /* MODE_CMETH, MODE_CCALL: its method descriptor (strong) */
    long long header;    /* GC header and pre-header bytes, as sys.getsizeof adds them */
} Entry;

typedef struct {
    Entry *entries;
    Py_ssize_t n, cap;
    Py_ssize_t *slots; /* index into entries, -1 when empty; size is a power of two */
    size_t mask;
} Table;

/* Set once, at the first import (never released: they live as long as the interpreter). */
static PyObject *sizeof_name;   /* "__sizeof__", interned */
static PyObject *object_sizeof; /* object.__sizeof__ (borrowed from object's dict) */
static long long gc_head;       /* sizeof(PyGC_Head): sys.getsizeof([]) - [].__sizeof__() */

/* The size a __sizeof__ call returned, from its result ``r`` (a new reference, or NULL when it
 * raised): >= 0; -1 when it raised an Exception or returned something that is not a non-negative
 * int that fits (cleared: the object is unsized); -2 when it raised anything else
 * (KeyboardInterrupt: left set, to propagate). */
static long long
size_of_result(PyObject *r)
{
    if (r != NULL) {
        long long v = PyLong_Check(r) ? PyLong_AsLongLong(r) : -1;
        Py_DECREF(r);
        if (v >= 0)
            return v;
        if (v != -1 || !PyErr_Occurred())
            return -1;
    }
    if (PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
        return -1;
    }
    return -2;
}

/* Bytes sys.getsizeof adds to __sizeof__ for instances of ``tp`` (CPython 3.11-3.13,
 * _PySys_GetSizeOf and _PyType_PreHeaderSize): the GC header of a GC type, and two pointers
 * before objects with a managed dict (3.12+: or managed weakrefs). */
static long long
type_header(PyTypeObject *tp)
{
    long long h = PyType_IS_GC(tp) ? gc_head : 0;
#if defined(Py_TPFLAGS_MANAGED_WEAKREF)
    if (tp->tp_flags & (Py_TPFLAGS_MANAGED_DICT | Py_TPFLAGS_MANAGED_WEAKREF))
        h += 2 * (long long)sizeof(PyObject *);
#elif defined(Py_TPFLAGS_MANAGED_DICT)
    if (tp->tp_flags & Py_TPFLAGS_MANAGED_DICT)
        h += 2 * (long long)sizeof(PyObject *);
#endif
    return h;
}

/* The header of ``o`` itself: 3.13 adds none for a static type (an instance of exactly ``type``). */
static inline long long
object_header(const Entry *e, PyObject *o)
{
#if PY_VERSION_HEX >= 0x030D0000
    if (e->type == &PyType_Type && !PyType_HasFeature((PyTypeObject *)o, Py_TPFLAGS_HEAPTYPE))
        return 0;
#else
    (void)o;
#endif
    return e->header;
}

/* The C __sizeof__ ``tp`` inherits (borrowed): the first ``__sizeof__`` in the dicts of its MRO
 * that is a C method of a class ``tp`` derives from. Python functions and C methods of unrelated
 * classes are passed over; object.__sizeof__ ends every MRO. NULL (no error) when none is found. */
static PyObject *
c_sizeof_of(PyTypeObject *tp)
{
    PyObject *mro = tp->tp_mro;
    if (mro == NULL || !PyTuple_Check(mro))
        return object_sizeof;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(mro); k++) {
        PyObject *base = PyTuple_GET_ITEM(mro, k);
        if (!PyType_Check(base))
            continue;
#if PY_VERSION_HEX >= 0x030C0000
        PyObject *dict = PyType_GetDict((PyTypeObject *)base);
#else
        PyObject *dict = ((PyTypeObject *)base)->tp_dict;
        Py_XINCREF(dict);
#endif
        if (dict == NULL)
            continue;
        PyObject *d = PyDict_Check(dict) ? PyDict_GetItemWithError(dict, sizeof_name) : NULL;
        Py_DECREF(dict); /* the type keeps its dict, and the dict the descriptor */
        if (d == NULL) {
            if (PyErr_Occurred())
                PyErr_Clear();
            continue;
        }
        if (Py_IS_TYPE(d, &PyMethodDescr_Type) && PyType_IsSubtype(tp, PyDescr_TYPE(d)))
            return d;
    }
    return object_sizeof;
}

/* Decide how instances of ``tp`` are sized. */
static void
entry_init(Entry *e, PyTypeObject *tp, long long limit)
{
    e->header = type_header(tp);
    e->meth = NULL;
    e->descr = NULL;
    e->fixed = 0;
    PyObject *descr = c_sizeof_of(tp);
    if (descr == object_sizeof && tp->tp_itemsize == 0) {
        long long s = (long long)tp->tp_basicsize + e->header;
        e->mode = MODE_FIXED;
        e->fixed = s <= limit ? s : -1;
        return;
    }
    Py_INCREF(descr);
    e->descr = descr;
    PyMethodDef *def = ((PyMethodDescrObject *)descr)->d_method;
    int kind = def->ml_flags & (METH_VARARGS | METH_KEYWORDS | METH_NOARGS | METH_O | METH_FASTCALL | METH_METHOD);
    if (kind == METH_NOARGS) {
        e->mode = MODE_CMETH;
        e->meth = def->ml_meth;
    }
    else {
        e->mode = MODE_CCALL;
    }
}

/* The C-level size of ``o`` (an instance of e->type), not rounded: >= 0; -1 when it cannot be
 * read or is above ``limit``; -2 on an exception to propagate. */
static long long
entry_size(const Entry *e, PyObject *o, long long limit)
{
    if (e->mode == MODE_FIXED)
        return e->fixed;
    long long raw = size_of_result(e->mode == MODE_CMETH ? e->meth(o, NULL) : PyObject_CallOneArg(e->descr, o));
    if (raw < 0)
        return raw;
    long long h = object_header(e, o);
    return raw <= limit - h ? raw + h : -1;
}

static inline long long
sat_add(long long a, long long b)
{
    return a > LLONG_MAX - b ? LLONG_MAX : a + b;
}

static int
table_init(Table *t, Py_ssize_t cap)
{
    t->n = 0;
    t->cap = cap;
    t->mask = (size_t)(2 * cap) - 1;
    t->entries = PyMem_Malloc(cap * sizeof(Entry));
    t->slots = PyMem_Malloc((t->mask + 1) * sizeof(Py_ssize_t));
    if (t->entries == NULL || t->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i <= t->mask; i++)
        t->slots[i] = -1;
    return 0;
}

static int
table_grow(Table *t)
{
    size_t size = (t->mask + 1) * 2;
    Py_ssize_t *slots = PyMem_Malloc(size * sizeof(Py_ssize_t));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < size; i++)
        slots[i] = -1;
    size_t mask = size - 1;
    for (Py_ssize_t e = 0; e < t->n; e++) {
        size_t h = ((uintptr_t)t->entries[e].type >> 4) & mask;
        while (slots[h] >= 0)
            h = (h + 1) & mask;
        slots[h] = e;
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->mask = mask;
    return 0;
}

/* The entry of ``tp``, added on first sight. Entries move only when a type is added. */
static Entry *
table_entry(Table *t, PyTypeObject *tp, long long limit)
{
    size_t h = ((uintptr_t)tp >> 4) & t->mask;
    for (;;) {
        Py_ssize_t e = t->slots[h];
        if (e < 0)
            break;
        if (t->entries[e].type == tp)
            return &t->entries[e];
        h = (h + 1) & t->mask;
    }
    if (t->n == t->cap) {
        Py_ssize_t cap = t->cap * 2;
        Entry *entries = PyMem_Realloc(t->entries, cap * sizeof(Entry));
        if (entries == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        t->entries = entries;
        t->cap = cap;
    }
    Entry *e = &t->entries[t->n];
    Py_INCREF(tp);
    e->type = tp;
    e->count = 0;
    e->bytes = 0;
    e->owned_bytes = 0;
    e->unsized = 0;
    entry_init(e, tp, limit);
    t->slots[h] = t->n++;
    if ((size_t)t->n * 2 > t->mask + 1 && table_grow(t) < 0)
        return NULL;
    return &t->entries[t->n - 1];
}

static void
table_free(Table *t)
{
    for (Py_ssize_t e = 0; e < t->n; e++) {
        Py_DECREF(t->entries[e].type);
        Py_XDECREF(t->entries[e].descr);
    }
    PyMem_Free(t->entries);
    PyMem_Free(t->slots);
}

static int
check_limit(long long limit)
{
    if (limit < 0) {
        PyErr_Format(PyExc_ValueError, "limit=%lld: pass a number of bytes >= 0, e.g. 2**48", limit);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ the census walk
 *
 * One object counted: its type's entry, its C-level size rounded up, owned or not. */

/* A set of object addresses as bitmaps of 256 KiB of address space each (a bit per 16 bytes:
 * two objects never start in the same 16 bytes, an object being at least 16 bytes long). The
 * census walk meets objects in the order their containers hold them, which is mostly the order
 * they were allocated in, so consecutive lookups fall in the same 2 KiB bitmap: the cache misses
 * of a hashed table of ids (one per lookup, the main cost of the walk on a heap holding a
 * tokenizer vocabulary) mostly go away. Bitmaps come from chunks mapped like IdSet tables. */
#define PAGED_SHIFT 18
#define PAGED_WORDS ((size_t)1 << (PAGED_SHIFT - 4 - 6))
#define PAGED_CHUNK_REGIONS 64

typedef struct {
    uint64_t key;   /* address >> PAGED_SHIFT, plus one (0 = empty slot) */
    uint64_t *bits;
} Region;

typedef struct {
    Region *table;
    size_t cap, used;             /* cap a power of two, at most half full */
    int table_mapped;
    uint64_t last_key;
    uint64_t *last_bits;
    uint64_t **chunks;            /* each PAGED_CHUNK_REGIONS bitmaps */
    int *chunk_mapped;
    size_t nchunks, chunk_cap, in_chunk;
} PagedBits;

static void
paged_free(PagedBits *p)
{
    slots_free((uint64_t *)p->table, p->cap * 2, p->table_mapped);
    for (size_t c = 0; c < p->nchunks; c++)
        slots_free(p->chunks[c], PAGED_CHUNK_REGIONS * PAGED_WORDS, p->chunk_mapped[c]);
    PyMem_Free(p->chunks);
    PyMem_Free(p->chunk_mapped);
    memset(p, 0, sizeof(*p));
}

static inline size_t
region_slot(uint64_t key, size_t cap)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ULL) >> 17) & (cap - 1);
}

static int
paged_grow(PagedBits *p)
{
    size_t cap = p->cap ? p->cap * 2 : 64;
    int mapped;
    Region *table = (Region *)slots_alloc(cap * 2, &mapped); /* two words a slot */
    if (table == NULL)
        return -1;
    for (size_t j = 0; j < p->cap; j++) {
        Region r = p->table[j];
        if (r.key == 0)
            continue;
        size_t i = region_slot(r.key, cap);
        while (table[i].key != 0)
            i = (i + 1) & (cap - 1);
        table[i] = r;
    }
    slots_free((uint64_t *)p->table, p->cap * 2, p->table_mapped);
    p->table = table;
    p->cap = cap;
    p->table_mapped = mapped;
    return 0;
}

/* A zeroed bitmap for a new region, or NULL (error set). */
static uint64_t *
paged_bitmap(PagedBits *p)
{
    if (p->nchunks == 0 || p->in_chunk == PAGED_CHUNK_REGIONS) {
        if (p->nchunks == p->chunk_cap) {
            size_t cap = p->chunk_cap ? p->chunk_cap * 2 : 8;
            uint64_t **chunks = PyMem_Realloc(p->chunks, cap * sizeof(uint64_t *));
            int *mapped = chunks == NULL ? NULL : PyMem_Realloc(p->chunk_mapped, cap * sizeof(int));
            if (chunks != NULL)
                p->chunks = chunks;
            if (mapped == NULL) {
                PyErr_NoMemory();
                return NULL;
            }
            p->chunk_mapped = mapped;
            p->chunk_cap = cap;
        }
        uint64_t *chunk = slots_alloc(PAGED_CHUNK_REGIONS * PAGED_WORDS, &p->chunk_mapped[p->nchunks]);
        if (chunk == NULL)
            return NULL;
        p->chunks[p->nchunks++] = chunk;
        p->in_chunk = 0;
    }
    return p->chunks[p->nchunks - 1] + PAGED_WORDS * p->in_chunk++;
}

/* Whether ``addr`` is in the set. */
static inline int
paged_has(PagedBits *p, uint64_t addr)
{
    uint64_t key = (addr >> PAGED_SHIFT) + 1;
    uint64_t *bits = p->last_bits;
    if (key != p->last_key || bits == NULL) {
        if (p->cap == 0)
            return 0;
        size_t i = region_slot(key, p->cap);
        while (p->table[i].key != 0 && p->table[i].key != key)
            i = (i + 1) & (p->cap - 1);
        if (p->table[i].key == 0)
            return 0;
        bits = p->table[i].bits;
        p->last_key = key;
        p->last_bits = bits;
    }
    size_t bit = (size_t)(addr >> 4) & (PAGED_WORDS * 64 - 1);
    return (bits[bit >> 6] >> (bit & 63)) & 1;
}

/* 1 when ``addr`` was added, 0 when it was there, -1 on error. */
static int
paged_add(PagedBits *p, uint64_t addr)
{
    uint64_t key = (addr >> PAGED_SHIFT) + 1;
    uint64_t *bits = p->last_bits;
    if (key != p->last_key || bits == NULL) {
        if ((p->used + 1) * 2 > p->cap && paged_grow(p) < 0)
            return -1;
        size_t i = region_slot(key, p->cap);
        while (p->table[i].key != 0 && p->table[i].key != key)
            i = (i + 1) & (p->cap - 1);
        if (p->table[i].key == 0) {
            if ((bits = paged_bitmap(p)) == NULL)
                return -1;
            p->table[i].key = key;
            p->table[i].bits = bits;
            p->used++;
        }
        bits = p->table[i].bits;
        p->last_key = key;
        p->last_bits = bits;
    }
    size_t bit = (size_t)(addr >> 4) & (PAGED_WORDS * 64 - 1);
    uint64_t mask = (uint64_t)1 << (bit & 63);
    if (bits[bit >> 6] & mask)
        return 0;
    bits[bit >> 6] |= mask;
    return 1;
}

#define RING 16

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)(p))
#endif

typedef struct {
    Table t;
    long long limit;
    long long align;
    const int64_t *ids;      /* owned ids, sorted (or NULL) */
    Py_ssize_t n_ids;
    IdSetObject *owned_set;  /* owned ids as an IdSet (or NULL) */
    PagedBits owned_bits;    /* owned ids given as an array, as paged bitmaps (see owned_init) */
    int any_owned;
    /* the untracked walk */
    PagedBits seen;          /* untracked objects counted that more than one reference may reach */
    uint64_t *stack;         /* untracked containers still to walk (addresses of strong references) */
    size_t sp, scap;
    int stack_mapped;        /* the stack is mapped (slots_alloc), like a large IdSet table */
    int dedup_all;           /* walking a dict subclass: its keys may be visited twice, dedupe everything */
    PyObject *const *skip;   /* objects whose referents are not walked (tokdiag's own id sets) */
    Py_ssize_t n_skip;
    PyObject *ring[RING];    /* referents met, waiting for their memory to arrive (see visit_untracked) */
    unsigned ring_head, ring_n;
} Walk;

/* The owned ids are looked up for every object counted. An IdSet is a bitmap of the address
 * space already and is read as it is; a sorted array of ids (the numpy path's) is copied once into
 * paged bitmaps, where consecutive objects are looked up in the same 2 KiB. */
static int
owned_init(Walk *w)
{
    if (w->owned_set != NULL) {
        w->any_owned = w->owned_set->used > 0;
        return 0;
    }
    for (Py_ssize_t j = 0; j < w->n_ids; j++)
        if (paged_add(&w->owned_bits, (uint64_t)w->ids[j]) < 0)
            return -1;
    w->any_owned = w->n_ids > 0;
    return 0;
}

static int
owned_has(Walk *w, uint64_t addr)
{
    return w->owned_set != NULL ? idset_has(w->owned_set, addr) : paged_has(&w->owned_bits, addr);
}

/* 0, or -1 with an exception set. */
static int
tally(Walk *w, PyObject *o)
{
    Entry *e = table_entry(&w->t, Py_TYPE(o), w->limit);
    if (e == NULL)
        return -1;
    long long size = entry_size(e, o, w->limit);
    if (size == -2)
        return -1;
    /* e stays valid: entries move only when table_entry adds a type, never while sizing */
    e->count++;
    if (size < 0) {
        e->unsized++;
        return 0;
    }
    size = (size + w->align - 1) & ~(w->align - 1);
    e->bytes = sat_add(e->bytes, size);
    if (w->any_owned && owned_has(w, ADDR(o)))
        e->owned_bytes = sat_add(e->owned_bytes, size);
    return 0;
}

/* tp_traverse visitor of the untracked walk: a referent the gc does not track (a str, an int, a
 * bytearray, a tuple or dict of atoms, ...) is counted the first time it is met; an untracked
 * container is pushed to be walked in turn. Tracked referents are in the heap list already.
 * Classes are program structure (a static type is not tracked): never counted.
 *
 * Only an object with more than one reference can be met twice, so only those go through the
 * id set: the many strings and numbers held by one container alone cost no lookup. */
static int
visit_now(PyObject *o, Walk *w)
{
    PyTypeObject *tp = Py_TYPE(o);
    /* PyObject_IS_GC, inlined: one flag of the type, and a type object's own tp_is_gc */
    int gc = PyType_IS_GC(tp) && (tp->tp_is_gc == NULL || tp->tp_is_gc(o));
    if ((gc && PyObject_GC_IsTracked(o)) || PyType_FastSubclass(tp, Py_TPFLAGS_TYPE_SUBCLASS))
        return 0;
    if (w->dedup_all || Py_REFCNT(o) > 1) {
        int added = paged_add(&w->seen, ADDR(o));
        if (added <= 0)
            return added;
    }
    if (tally(w, o) < 0)
        return -1;
    if (!gc || tp->tp_traverse == NULL)
        return 0;
    if (w->sp == w->scap) {
        size_t cap = w->scap ? w->scap * 2 : 256;
        int mapped;
        uint64_t *stack = slots_alloc(cap, &mapped);
        if (stack == NULL)
            return -1;
        if (w->sp)
            memcpy(stack, w->stack, w->sp * sizeof(uint64_t));
        slots_free(w->stack, w->scap, w->stack_mapped);
        w->stack = stack;
        w->scap = cap;
        w->stack_mapped = mapped;
    }
    Py_INCREF(o);
    w->stack[w->sp++] = ADDR(o);
    return 0;
}

/* The visitor given to tp_traverse. Reading a referent's header is a cache miss (the referents
 * of a heap are all over memory): each referent is prefetched when met and visited RING
 * referents later, when its memory has arrived. */
static int
visit_untracked(PyObject *o, void *arg)
{
    Walk *w = (Walk *)arg;
    PREFETCH(o);
    PREFETCH((char *)o - 16); /* the GC header, before the object: where "tracked" is */
    if (w->ring_n < RING) {
        w->ring[(w->ring_head + w->ring_n++) % RING] = o;
        return 0;
    }
    PyObject *due = w->ring[w->ring_head];
    w->ring[w->ring_head] = o;
    w->ring_head = (w->ring_head + 1) % RING;
    return visit_now(due, w);
}

/* Visit what is waiting in the ring. */
static int
ring_flush(Walk *w)
{
    while (w->ring_n > 0) {
        PyObject *due = w->ring[w->ring_head];
        w->ring_head = (w->ring_head + 1) % RING;
        w->ring_n--;
        if (visit_now(due, w) < 0)
            return -1;
    }
    return 0;
}

/* Visit what ``o`` references. An exact dict is read entry by entry, keys included: CPython
 * 3.11+'s dict_traverse passes over the keys of a dict whose keys are all str (they cannot make
 * a cycle), and those strings are data too. A dict subclass is traversed (its slots, its own
 * __dict__) and its keys visited on top, every visit then deduplicated. */
static int
walk_referents(Walk *w, PyObject *o)
{
    for (Py_ssize_t k = 0; k < w->n_skip; k++)
        if (w->skip[k] == o)
            return 0;
    PyTypeObject *tp = Py_TYPE(o);
    if (tp == &PyDict_Type) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(o, &pos, &key, &value)) /* borrowed: nothing runs that could change o */
            if (visit_untracked(key, w) < 0 || visit_untracked(value, w) < 0)
                return -1;
        return 0;
    }
    traverseproc trav = tp->tp_traverse;
    if (trav == NULL)
        return 0;
    if (!PyDict_Check(o))
        return trav(o, visit_untracked, w);
    /* the ring is emptied before and after: what it holds is visited with this object's dedup_all */
    int before = w->dedup_all;
    if (ring_flush(w) < 0)
        return -1;
    w->dedup_all = 1;
    int r = trav(o, visit_untracked, w);
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (r == 0 && PyDict_Next(o, &pos, &key, &value))
        r = visit_untracked(key, w);
    if (r == 0)
        r = ring_flush(w);
    w->dedup_all = before;
    return r;
}

/* The untracked objects reachable from ``o`` (a tracked object of the heap), depth first; with
 * ``o`` NULL, what is still waiting in the ring and on the stack (at the end). Referents still in
 * the ring when the next heap object is walked are visited then: they stay alive (their holders
 * do, and nothing runs that could change them). */
static int
walk_untracked(Walk *w, PyObject *o)
{
    if (o != NULL && PyObject_IS_GC(o) && walk_referents(w, o) < 0)
        return -1;
    for (;;) {
        while (w->sp > 0) {
            PyObject *c = (PyObject *)(uintptr_t)w->stack[--w->sp];
            int r = walk_referents(w, c);
            Py_DECREF(c);
            if (r < 0)
                return -1;
        }
        if (o != NULL || w->ring_n == 0)
            return 0;
        if (ring_flush(w) < 0) /* may push more containers */
            return -1;
    }
}

static PyObject *
census_count(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"heap", "owned", "align", "limit", "untracked", "skip", NULL};
    PyObject *heap, *owned_arg, *skip_arg = NULL;
    Py_ssize_t align;
    long long limit = DEFAULT_LIMIT;
    int untracked = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!On|LpO:count", kwlist, &PyList_Type, &heap, &owned_arg,
                                     &align, &limit, &untracked, &skip_arg))
        return NULL;
    if (align <= 0 || align > 4096 || (align & (align - 1)) != 0) {
        PyErr_Format(PyExc_ValueError, "align=%zd: pass a power of two up to 4096, e.g. 8", align);
        return NULL;
    }
    if (check_limit(limit) < 0)
        return NULL;
    PyObject *skip = NULL;
    if (skip_arg != NULL && skip_arg != Py_None) {
        skip = PySequence_Fast(skip_arg, "count: skip must be a sequence of objects (tokdiag's own containers)");
        if (skip == NULL)
            return NULL;
    }
    Py_buffer owned = {0};
    Walk w = {0};
    w.limit = limit;
    w.align = align;
    int have_buffer = 0;
    PyObject *result = NULL;
    if (skip != NULL) {
        w.skip = PySequence_Fast_ITEMS(skip);
        w.n_skip = PySequence_Fast_GET_SIZE(skip);
    }
    if (Py_IS_TYPE(owned_arg, &IdSetType)) {
        w.owned_set = (IdSetObject *)owned_arg;
    }
    else if (owned_arg != Py_None) {
        if (PyObject_GetBuffer(owned_arg, &owned, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
            goto done;
        have_buffer = 1;
        const char *f = owned.format != NULL ? owned.format : "B";
        if (*f == '<' || *f == '=' || *f == '@')
            f++;
        int int64 = owned.itemsize == 8 && (strcmp(f, "q") == 0 || strcmp(f, "l") == 0);
        w.n_ids = int64 ? owned.len / 8 : 0;
        w.ids = (const int64_t *)owned.buf;
        for (Py_ssize_t k = 1; int64 && k < w.n_ids; k++)
            if (w.ids[k - 1] > w.ids[k])
                int64 = 0;
        if (!int64) {
            PyErr_SetString(PyExc_ValueError, "owned: pass an IdSet, or a sorted native int64 array of ids");
            goto done;
        }
    }
    if (table_init(&w.t, 16) < 0 || owned_init(&w) < 0)
        goto done;

    /* The list is re-read at every step: a C __sizeof__ could in principle run code. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(heap); i++) {
        if (i + 8 < PyList_GET_SIZE(heap))
            PREFETCH(PyList_GET_ITEM(heap, i + 8));
        PyObject *o = PyList_GET_ITEM(heap, i);
        Py_INCREF(o);
        int r = tally(&w, o);
        if (r == 0 && untracked)
            r = walk_untracked(&w, o);
        Py_DECREF(o);
        if (r < 0)
            goto done;
    }
    if (untracked && walk_untracked(&w, NULL) < 0)
        goto done;

    result = PyList_New(w.t.n);
    if (result == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < w.t.n; k++) {
        Entry *e = &w.t.entries[k];
        PyObject *row = Py_BuildValue("(OnLLn)", (PyObject *)e->type, e->count, e->bytes, e->owned_bytes, e->unsized);
        if (row == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, k, row);
    }
done:
    while (w.sp > 0)
        Py_DECREF((PyObject *)(uintptr_t)w.stack[--w.sp]);
    slots_free(w.stack, w.scap, w.stack_mapped);
    paged_free(&w.owned_bits);
    paged_free(&w.seen);
    table_free(&w.t);
    if (have_buffer)
        PyBuffer_Release(&owned);
    Py_XDECREF(skip);
    return result;
}

static PyObject *
census_size(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *o;
    long long limit = DEFAULT_LIMIT;
    if (!PyArg_ParseTuple(args, "O|L:size", &o, &limit) || check_limit(limit) < 0)
        return NULL;
    Entry e = {0};
    e.type = Py_TYPE(o);
    entry_init(&e, e.type, limit);
    long long size = entry_size(&e, o, limit);
    Py_XDECREF(e.descr);
    return size == -2 ? NULL : PyLong_FromLongLong(size);
}

static PyObject *
census_types(PyObject *Py_UNUSED(module), PyObject *heap)
{
    if (!PyList_Check(heap)) {
        PyErr_SetString(PyExc_TypeError, "types: pass a list of objects");
        return NULL;
    }
    Table t = {0};
    PyObject *result = NULL;
    if (table_init(&t, 16) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(heap); i++)
        if (table_entry(&t, Py_TYPE(PyList_GET_ITEM(heap, i)), DEFAULT_LIMIT) == NULL)
            goto done;
    result = PyList_New(t.n);
    if (result == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < t.n; k++) {
        Py_INCREF(t.entries[k].type);
        PyList_SET_ITEM(result, k, (PyObject *)t.entries[k].type);
    }
done:
    table_free(&t);
    return result;
}

/* ------------------------------------------------------------------ atom_hash */

static inline int
is_atom_type(PyTypeObject *tp)
{
    return tp == &PyUnicode_Type || tp == &PyBytes_Type || tp == &PyLong_Type || tp == &PyFloat_Type
        || tp == &PyBool_Type || tp == Py_TYPE(Py_None);
}

#define HASH_MULT ((Py_uhash_t)1000003)

/* 0 and *out set when ``o`` is an atom tree at most ``depth`` containers deep; 1 when it is not;
 * -1 on an error (set). */
static int
atom_hash(PyObject *o, int depth, Py_uhash_t *out)
{
    PyTypeObject *tp = Py_TYPE(o);
    if (is_atom_type(tp)) {
        Py_hash_t h = PyObject_Hash(o);
        if (h == -1 && PyErr_Occurred())
            return -1;
        *out = (Py_uhash_t)h;
        return 0;
    }
    if (depth <= 0)
        return 1;
    Py_uhash_t acc, h;
    int r;
    if (tp == &PyTuple_Type || tp == &PyList_Type) {
        acc = tp == &PyTuple_Type ? 0x345678UL : 0x9E3779B9UL;
        for (Py_ssize_t i = 0; i < Py_SIZE(o); i++) { /* a list's size is re-read: nothing runs between */
            PyObject *item = tp == &PyTuple_Type ? PyTuple_GET_ITEM(o, i) : PyList_GET_ITEM(o, i);
            Py_INCREF(item);
            r = atom_hash(item, depth - 1, &h);
            Py_DECREF(item);
            if (r != 0)
                return r;
            acc = (acc ^ h) * HASH_MULT;
        }
        *out = acc ^ (Py_uhash_t)Py_SIZE(o);
        return 0;
    }
    if (tp == &PyDict_Type) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        acc = 0x27D4EB2DUL;
        while (PyDict_Next(o, &pos, &k, &v)) {
            Py_uhash_t hk, hv;
            Py_INCREF(k);
            Py_INCREF(v);
            r = atom_hash(k, depth - 1, &hk);
            if (r == 0)
                r = atom_hash(v, depth - 1, &hv);
            Py_DECREF(k);
            Py_DECREF(v);
            if (r != 0)
                return r;
            acc += (hk * HASH_MULT) ^ hv; /* order of entries does not matter */
        }
        *out = acc ^ (Py_uhash_t)PyDict_GET_SIZE(o);
        return 0;
    }
    if (tp == &PySet_Type || tp == &PyFrozenSet_Type) {
        PyObject *it = PyObject_GetIter(o);
        if (it == NULL)
            return -1;
        PyObject *item;
        acc = 0x165667B1UL;
        r = 0;
        while (r == 0 && (item = PyIter_Next(it)) != NULL) {
            r = atom_hash(item, depth - 1, &h);
            Py_DECREF(item);
            if (r == 0)
                acc += h * HASH_MULT;
        }
        Py_DECREF(it);
        if (r == 0 && PyErr_Occurred())
            return -1;
        if (r != 0)
            return r;
        *out = acc ^ (Py_uhash_t)PySet_GET_SIZE(o);
        return 0;
    }
    return 1;
}

static PyObject *
atom_hash_py(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *o;
    int depth = 6;
    if (!PyArg_ParseTuple(args, "O|i:atom_hash", &o, &depth))
        return NULL;
    Py_uhash_t h;
    int r = atom_hash(o, depth, &h);
    if (r < 0)
        return NULL;
    if (r > 0)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong((unsigned long long)h);
}

static PyMethodDef census_methods[] = {
    {"count", (PyCFunction)(void (*)(void))census_count, METH_VARARGS | METH_KEYWORDS,
     "count(heap, owned, align, limit=2**48, untracked=False, skip=()) -> [(type, count, bytes, owned_bytes, unsized), ...]\n\n"
     "One pass over the list ``heap``: per type, the number of objects and the sum of their\n"
     "C-level sizes (never a Python-level __sizeof__) rounded up to ``align``; ``owned_bytes``\n"
     "is the part of ``bytes`` in objects that are in ``owned`` (an IdSet, a buffer of sorted\n"
     "int64 ids, or None); ``unsized`` objects (C __sizeof__ raised, or above ``limit``) count 0 bytes.\n"
     "With ``untracked``, also the objects the gc does not track that the heap's objects reach\n"
     "(str, int, bytearray, tuples and dicts of atoms, ...), each once, counted with their type\n"
     "(classes excepted); the referents of the objects in ``skip`` are not walked."},
    {"types", census_types, METH_O,
     "types(heap) -> list: the distinct types of the objects of the list ``heap``, in order of first\n"
     "sight, told apart by address (a metaclass's __hash__ or __eq__ never runs)."},
    {"size", census_size, METH_VARARGS,
     "size(obj, limit=2**48) -> int: the C-level size of ``obj`` (not rounded), -1 when it cannot be read."},
    {"referents", referents_slice, METH_VARARGS,
     "referents(obj, start, count) -> list: gc.get_referents(obj)[start:start + count], read by the\n"
     "type's tp_traverse without listing the rest (a huge container in bounded slices)."},
    {"atom_hash", atom_hash_py, METH_VARARGS,
     "atom_hash(obj, depth=6) -> int | None: a hash of a tree of exact builtin atoms in exact tuples,\n"
     "lists, sets, frozensets and dicts; None for anything else (no __hash__ of a program's runs)."},
    {NULL, NULL, 0, NULL},
};

static int
census_exec(PyObject *module)
{
    if (PyModule_AddType(module, &IdSetType) < 0)
        return -1;
    if (sizeof_name != NULL)
        return 0;
    sizeof_name = PyUnicode_InternFromString("__sizeof__");
    if (sizeof_name == NULL)
        return -1;
    object_sizeof = _PyType_Lookup(&PyBaseObject_Type, sizeof_name);
    if (object_sizeof == NULL || !Py_IS_TYPE(object_sizeof, &PyMethodDescr_Type)) {
        PyErr_SetString(PyExc_RuntimeError, "object.__sizeof__ not found");
        return -1;
    }
    /* sizeof(PyGC_Head) is not in the public headers: sys.getsizeof([]) - [].__sizeof__() */
    PyObject *lst = PyList_New(0);
    if (lst == NULL)
        return -1;
    long long outer = -1, inner = -1;
    PyObject *sys = PyImport_ImportModule("sys");
    if (sys != NULL) {
        PyObject *r = PyObject_CallMethod(sys, "getsizeof", "O", lst);
        outer = r != NULL ? PyLong_AsLongLong(r) : -1;
        Py_XDECREF(r);
        r = PyObject_CallMethod(lst, "__sizeof__", NULL);
        inner = r != NULL ? PyLong_AsLongLong(r) : -1;
        Py_XDECREF(r);
        Py_DECREF(sys);
    }
    Py_DECREF(lst);
    if (outer < 0 || inner < 0 || outer < inner) {
        sizeof_name = NULL;
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "cannot measure the GC header size");
        return -1;
    }
    gc_head = outer - inner;
    return 0;
}

static PyModuleDef_Slot census_slots[] = {
    {Py_mod_exec, census_exec},
    {0, NULL},
};

static struct PyModuleDef census_module = {
    PyModuleDef_HEAD_INIT, "tokdiag._speedups",
    "C loops of the heap census and of deep sizing (see tokdiag.probes.census, tokdiag.probes.sizing).", 0,
    census_methods, census_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&census_module);
}
