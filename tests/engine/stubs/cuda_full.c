/* A libcuda.so.1 with every entry point the backend resolves. Built as:
 *   default          cuInit returns STUB_CUDA_INIT_CODE (default 100, no device)
 *   -DNEEDS_JITLINK  cuInit calls into libnvJitLink (the mismatched-release case)
 *   -DCRASH          cuInit dereferences a null pointer
 *   -DHANG           cuInit never returns
 *   -DNO_DEVICE_GET  cuDeviceGet is missing (a partial driver)
 */
#include <stdlib.h>
#include <unistd.h>
#ifdef NEEDS_JITLINK
int __nvJitLinkCreate_12_8(void **handle);
#endif

int cuInit(unsigned flags) {
    (void)flags;
#ifdef NEEDS_JITLINK
    void *handle = 0;
    __nvJitLinkCreate_12_8(&handle);
#endif
#ifdef CRASH
    volatile int *nothing = 0;
    *nothing = 1;
#endif
#ifdef HANG
    for (;;) pause();
#endif
    const char *code = getenv("STUB_CUDA_INIT_CODE");
    return code ? atoi(code) : 100;
}

#define STUB(name) int name(void) { return 999; }
STUB(cuDriverGetVersion)
#ifndef NO_DEVICE_GET
STUB(cuDeviceGet)
#endif
STUB(cuDeviceGetCount)
STUB(cuDeviceGetName)
STUB(cuDeviceTotalMem_v2)
STUB(cuDeviceGetAttribute)
STUB(cuDevicePrimaryCtxRetain)
STUB(cuCtxSetCurrent)
STUB(cuStreamCreate)
STUB(cuMemAlloc_v2)
STUB(cuMemcpyHtoDAsync_v2)
STUB(cuMemcpyDtoHAsync_v2)
STUB(cuModuleLoadData)
STUB(cuModuleGetFunction)
STUB(cuLaunchKernel)
