# The only file naming libsodium symbols.
#
# libsodium is not linked at build time: load_sodium() dlopens PyNaCl's extension module (which
# exports libsodium's C API; the process already has it loaded, so dlopen returns the same
# handle) and fills a table of function pointers. Each compiled module that needs libsodium
# keeps its own table, filled once at import.
from libc.stdint cimport uint8_t, uint64_t

cdef extern from "<dlfcn.h>" nogil:
    void* dlopen(const char* filename, int flags)
    void* dlsym(void* handle, const char* symbol)
    char* dlerror()
    int RTLD_NOW
    int RTLD_LOCAL

ctypedef int (*stream_chacha20_t)(uint8_t* c, unsigned long long clen,
                                  const uint8_t* n, const uint8_t* k) noexcept nogil
ctypedef int (*stream_chacha20_xor_ic_t)(uint8_t* c, const uint8_t* m, unsigned long long mlen,
                                         const uint8_t* n, uint64_t ic,
                                         const uint8_t* k) noexcept nogil
ctypedef int (*onetimeauth_poly1305_t)(uint8_t* out, const uint8_t* m, unsigned long long mlen,
                                       const uint8_t* k) noexcept nogil
ctypedef int (*verify_16_t)(const uint8_t* x, const uint8_t* y) noexcept nogil
ctypedef void (*memzero_t)(void* pnt, size_t len) noexcept nogil
ctypedef int (*sodium_init_t)() noexcept nogil

ctypedef struct sodium_api_t:
    stream_chacha20_t crypto_stream_chacha20
    stream_chacha20_xor_ic_t crypto_stream_chacha20_xor_ic
    onetimeauth_poly1305_t crypto_onetimeauth_poly1305
    verify_16_t crypto_verify_16
    memzero_t sodium_memzero


cdef inline void* _symbol(void* handle, const char* name, str path) except NULL:
    cdef void* fn = dlsym(handle, name)
    if fn == NULL:
        from tincapp.errors import SodiumLoadError
        raise SodiumLoadError(
            f"libsodium symbol {name.decode()} not found in {path}")
    return fn


cdef inline int load_sodium(sodium_api_t* api) except -1:
    """Called once at module import: resolve every symbol of sodium_api_t."""
    from tincapp.sodium import libsodium_path
    path = libsodium_path()
    cdef bytes bpath = path.encode()
    cdef void* handle = dlopen(bpath, RTLD_NOW | RTLD_LOCAL)
    if handle == NULL:
        from tincapp.errors import SodiumLoadError
        err = dlerror()
        raise SodiumLoadError(
            f"cannot dlopen libsodium from {path}: {err.decode() if err != NULL else '?'}")
    cdef sodium_init_t init = <sodium_init_t>_symbol(handle, b"sodium_init", path)
    if init() < 0:
        from tincapp.errors import SodiumLoadError
        raise SodiumLoadError(f"sodium_init() failed in {path}")
    api.crypto_stream_chacha20 = <stream_chacha20_t>_symbol(
        handle, b"crypto_stream_chacha20", path)
    api.crypto_stream_chacha20_xor_ic = <stream_chacha20_xor_ic_t>_symbol(
        handle, b"crypto_stream_chacha20_xor_ic", path)
    api.crypto_onetimeauth_poly1305 = <onetimeauth_poly1305_t>_symbol(
        handle, b"crypto_onetimeauth_poly1305", path)
    api.crypto_verify_16 = <verify_16_t>_symbol(handle, b"crypto_verify_16", path)
    api.sodium_memzero = <memzero_t>_symbol(handle, b"sodium_memzero", path)
    return 0
