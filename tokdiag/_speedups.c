/* tokdiag._census: the heap census in one C loop.
 *
 * count(heap, owned_ids, align) -> [(type, count, bytes, owned_bytes), ...]
 *
 * For every object of the list ``heap``: its type (a pointer-keyed hash
 * table, no Python hashing, so a metaclass's __hash__ never runs), one more
 * count, and its size as ``sys.getsizeof`` gives it rounded up to ``align``.
 * ``owned_ids`` is a buffer of sorted int64 ids (or None): the bytes of the
 * objects whose id is in it are added to ``owned_bytes`` as well.
 *
 * Sizes are exactly ``sys.getsizeof`` (tests/test_census_exact.py compares
 * both implementations against it), found three ways, picked per type on
 * its first object, as the pure-Python path in tokdiag/probes/census.py does:
 *
 * - FIXED: the type's instances cannot vary in size (``__itemsize__ == 0``
 *   and ``__sizeof__`` is ``object.__sizeof__``): getsizeof of the first
 *   object, times the count;
 * - CMETH: ``__sizeof__`` is a C method taking no arguments (dict, list,
 *   tuple, set, ...): that C function called directly, plus the GC header
 *   bytes that getsizeof adds (measured once per type on the first object);
 * - GETSIZEOF: anything else (a Python-level __sizeof__, metaclasses whose
 *   GC header depends on the instance): ``sys.getsizeof`` itself.
 *
 * An object whose size cannot be read counts 0 bytes, as in the Python
 * path; only exceptions that are not ``Exception`` (KeyboardInterrupt)
 * propagate.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

enum { MODE_FIXED, MODE_CMETH, MODE_GETSIZEOF };

typedef struct {
    PyTypeObject *type; /* strong reference while the census runs */
    Py_ssize_t count;
    long long bytes;
    long long owned_bytes;
    int mode;
    long long fixed;     /* MODE_FIXED: aligned size of every instance */
    PyCFunction meth;    /* MODE_CMETH: the type's C __sizeof__ */
    long long extra;     /* MODE_CMETH: getsizeof(o) - __sizeof__(o) */
} Entry;

typedef struct {
    Entry *entries;
    Py_ssize_t n, cap;
    Py_ssize_t *slots; /* index into entries, -1 when empty; size is a power of two */
    size_t mask;
} Table;

static PyObject *object_sizeof;  /* object.__sizeof__ */
static PyObject *sys_getsizeof;  /* sys.getsizeof */

/* getsizeof(o); -1 with no exception set when it raised an Exception,
 * -2 with the exception set when it raised something else. */
static long long
safe_getsizeof(PyObject *o)
{
    PyObject *r = PyObject_CallOneArg(sys_getsizeof, o);
    if (r != NULL) {
        long long v = PyLong_AsLongLong(r);
        Py_DECREF(r);
        if (!(v == -1 && PyErr_Occurred()))
            return v;
    }
    if (PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
        return -1;
    }
    return -2;
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

/* Decide how instances of ``tp`` are sized, from its first object ``o``. */
static int
entry_init(Entry *e, PyTypeObject *tp, PyObject *o, Py_ssize_t align)
{
    e->mode = MODE_GETSIZEOF;
    e->fixed = 0;
    e->meth = NULL;
    e->extra = 0;
    if (PyType_IsSubtype(tp, &PyType_Type))
        return 0;
    PyObject *descr = PyObject_GetAttrString((PyObject *)tp, "__sizeof__");
    if (descr == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return -1;
        PyErr_Clear();
        return 0;
    }
    if (tp->tp_itemsize == 0 && descr == object_sizeof) {
        long long s = safe_getsizeof(o);
        Py_DECREF(descr);
        if (s == -2)
            return -1;
        if (s >= 0) {
            e->mode = MODE_FIXED;
            e->fixed = (s + align - 1) & ~(long long)(align - 1);
        }
        return 0;
    }
    if (Py_IS_TYPE(descr, &PyMethodDescr_Type)) {
        PyMethodDef *def = ((PyMethodDescrObject *)descr)->d_method;
        int kind = def->ml_flags & (METH_VARARGS | METH_KEYWORDS | METH_NOARGS | METH_O
                                    | METH_FASTCALL | METH_METHOD);
        if (kind == METH_NOARGS) {
            PyObject *r = def->ml_meth(o, NULL);
            long long inner = -1;
            if (r != NULL) {
                inner = PyLong_AsLongLong(r);
                Py_DECREF(r);
            }
            if (inner == -1 && PyErr_Occurred()) {
                if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                    Py_DECREF(descr);
                    return -1;
                }
                PyErr_Clear();
            }
            else {
                long long outer = safe_getsizeof(o);
                if (outer == -2) {
                    Py_DECREF(descr);
                    return -1;
                }
                if (outer >= 0) {
                    e->mode = MODE_CMETH;
                    e->meth = def->ml_meth;
                    e->extra = outer - inner;
                }
            }
        }
    }
    Py_DECREF(descr);
    return 0;
}

/* The entry of ``tp``, added (and initialised from ``o``) on first sight. */
static Entry *
table_entry(Table *t, PyTypeObject *tp, PyObject *o, Py_ssize_t align)
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
    if (entry_init(e, tp, o, align) < 0) {
        Py_DECREF(tp);
        return NULL;
    }
    t->slots[h] = t->n++;
    if ((size_t)t->n * 2 > t->mask + 1 && table_grow(t) < 0)
        return NULL;
    return &t->entries[t->n - 1];
}

static int
is_owned(const int64_t *ids, Py_ssize_t n, int64_t id)
{
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && ids[lo] == id;
}

static void
table_free(Table *t)
{
    for (Py_ssize_t e = 0; e < t->n; e++)
        Py_DECREF(t->entries[e].type);
    PyMem_Free(t->entries);
    PyMem_Free(t->slots);
}

static PyObject *
census_count(PyObject *module, PyObject *args)
{
    PyObject *heap, *owned_arg;
    Py_ssize_t align;
    if (!PyArg_ParseTuple(args, "O!On:count", &PyList_Type, &heap, &owned_arg, &align))
        return NULL;
    if (align <= 0 || (align & (align - 1)) != 0) {
        PyErr_Format(PyExc_ValueError, "align=%zd: pass a power of two, e.g. 8", align);
        return NULL;
    }
    Py_buffer owned = {0};
    const int64_t *ids = NULL;
    Py_ssize_t n_ids = 0;
    if (owned_arg != Py_None) {
        if (PyObject_GetBuffer(owned_arg, &owned, PyBUF_SIMPLE) < 0)
            return NULL;
        if (owned.len % (Py_ssize_t)sizeof(int64_t) != 0) {
            PyBuffer_Release(&owned);
            PyErr_SetString(PyExc_ValueError, "owned_ids: pass a buffer of sorted int64 ids");
            return NULL;
        }
        ids = (const int64_t *)owned.buf;
        n_ids = owned.len / (Py_ssize_t)sizeof(int64_t);
    }
    Table t = {0};
    t.cap = 256;
    t.entries = PyMem_Malloc(t.cap * sizeof(Entry));
    t.slots = PyMem_Malloc(512 * sizeof(Py_ssize_t));
    t.mask = 511;
    PyObject *result = NULL;
    if (t.entries == NULL || t.slots == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (size_t i = 0; i <= t.mask; i++)
        t.slots[i] = -1;

    /* The list is re-read at every step: a Python __sizeof__ may run code. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(heap); i++) {
        PyObject *o = PyList_GET_ITEM(heap, i);
        Py_INCREF(o);
        PyTypeObject *tp = Py_TYPE(o);
        Entry *e = table_entry(&t, tp, o, align);
        if (e == NULL) {
            Py_DECREF(o);
            goto done;
        }
        Py_ssize_t idx = e - t.entries; /* a Python __sizeof__ below may not move entries, but be safe */
        long long size;
        if (e->mode == MODE_FIXED) {
            size = e->fixed;
        }
        else {
            long long raw = -1;
            if (e->mode == MODE_CMETH) {
                PyObject *r = e->meth(o, NULL);
                if (r != NULL) {
                    raw = PyLong_AsLongLong(r);
                    Py_DECREF(r);
                }
                if (raw == -1 && PyErr_Occurred()) {
                    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                        Py_DECREF(o);
                        goto done;
                    }
                    PyErr_Clear();
                    raw = -1;
                }
                else {
                    raw += t.entries[idx].extra;
                }
            }
            else {
                raw = safe_getsizeof(o);
                if (raw == -2) {
                    Py_DECREF(o);
                    goto done;
                }
            }
            size = raw < 0 ? 0 : (raw + align - 1) & ~(long long)(align - 1);
        }
        e = &t.entries[idx];
        e->count++;
        e->bytes += size;
        if (n_ids && is_owned(ids, n_ids, (int64_t)(uintptr_t)o))
            e->owned_bytes += size;
        Py_DECREF(o);
    }

    result = PyList_New(t.n);
    if (result == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < t.n; k++) {
        Entry *e = &t.entries[k];
        PyObject *row = Py_BuildValue("(OnLL)", (PyObject *)e->type, e->count, e->bytes, e->owned_bytes);
        if (row == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, k, row);
    }
done:
    table_free(&t);
    if (owned_arg != Py_None)
        PyBuffer_Release(&owned);
    return result;
}

static PyMethodDef census_methods[] = {
    {"count", census_count, METH_VARARGS,
     "count(heap, owned_ids, align) -> [(type, count, bytes, owned_bytes), ...]\n\n"
     "One pass over the list ``heap``: per type, the number of objects and the sum of\n"
     "``sys.getsizeof`` rounded up to ``align``; ``owned_bytes`` is the part of ``bytes``\n"
     "in objects whose id is in ``owned_ids`` (a buffer of sorted int64 ids, or None)."},
    {NULL, NULL, 0, NULL},
};

static int
census_exec(PyObject *module)
{
    object_sizeof = PyObject_GetAttrString((PyObject *)&PyBaseObject_Type, "__sizeof__");
    if (object_sizeof == NULL)
        return -1;
    PyObject *sys = PyImport_ImportModule("sys");
    if (sys == NULL)
        return -1;
    sys_getsizeof = PyObject_GetAttrString(sys, "getsizeof");
    Py_DECREF(sys);
    return sys_getsizeof == NULL ? -1 : 0;
}

static PyModuleDef_Slot census_slots[] = {
    {Py_mod_exec, census_exec},
    {0, NULL},
};

static struct PyModuleDef census_module = {
    PyModuleDef_HEAD_INIT, "tokdiag._census",
    "The heap census in one C loop (see tokdiag.probes.census).", 0,
    census_methods, census_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__census(void)
{
    return PyModuleDef_Init(&census_module);
}
