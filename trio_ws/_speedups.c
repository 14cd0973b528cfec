/* Optional accelerator for trio_ws: XOR masking of WebSocket payloads.
 *
 * mask(data, key, offset) -> bytes
 *
 * XORs the bytes of `data` (any contiguous buffer) with the 4-byte `key`,
 * starting `offset` (0-3) bytes into the key, eight bytes at a time. The
 * pure-Python fallback in _masking.py computes the same thing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *
mask(PyObject *self, PyObject *args)
{
    Py_buffer data, key;
    Py_ssize_t offset;
    if (!PyArg_ParseTuple(args, "y*y*n", &data, &key, &offset)) {
        return NULL;
    }
    if (key.len != 4 || offset < 0 || offset > 3) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "the key is 4 bytes and the offset 0-3");
        return NULL;
    }
    const unsigned char *src = (const unsigned char *)data.buf;
    const unsigned char *k = (const unsigned char *)key.buf;
    Py_ssize_t n = data.len;

    PyObject *result = PyBytes_FromStringAndSize(NULL, n);
    if (result == NULL) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&key);
        return NULL;
    }
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(result);

    /* The key, rotated by offset, repeated over eight bytes. */
    unsigned char rotated[8];
    for (int i = 0; i < 8; i++) {
        rotated[i] = k[(offset + i) & 3];
    }
    uint64_t word_key;
    memcpy(&word_key, rotated, 8);

    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        memcpy(&word, src + i, 8);
        word ^= word_key;
        memcpy(dst + i, &word, 8);
    }
    for (; i < n; i++) {
        dst[i] = src[i] ^ rotated[i & 7];
    }

    PyBuffer_Release(&data);
    PyBuffer_Release(&key);
    return result;
}

static PyMethodDef methods[] = {
    {"mask", mask, METH_VARARGS,
     "mask(data, key, offset) -> bytes: XOR data with the 4-byte key, "
     "starting offset bytes into it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "trio_ws._speedups", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
