/* A libcuda.so.1 that exports cuInit alone, which fails with STUB_CUDA_INIT_CODE (default 35,
 * CUDA_ERROR_INSUFFICIENT_DRIVER). */
#include <stdlib.h>
int cuInit(unsigned flags) {
    (void)flags;
    const char *code = getenv("STUB_CUDA_INIT_CODE");
    return code ? atoi(code) : 35;
}
