/* A stand-in for Windows' bcryptprimitives.dll, which wine 8 (Debian 12)
 * lacks: Rust's standard library calls its ProcessPrng for random bytes on
 * Windows 10 and later, so a Rust program will not start under that wine
 * without it. It forwards to RtlGenRandom (advapi32's SystemFunction036),
 * which wine has. For tests under wine only; never shipped. */
#include <windows.h>
#define SystemFunction036 NTAPI SystemFunction036
#include <ntsecapi.h>
#undef SystemFunction036

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG n = len > 0x7fffffff ? 0x7fffffff : (ULONG)len;
        if (!RtlGenRandom(data, n)) {
            return FALSE;
        }
        data += n;
        len -= n;
    }
    return TRUE;
}
