/* A Vulkan ICD left over from another driver release: its entry point calls into a
 * dependency that no longer has the symbol. */
int __nvJitLinkCreate_12_8(void **handle);
void *vk_icdGetInstanceProcAddr(void *instance, const char *name) {
    (void)instance; (void)name;
    void *handle = 0;
    __nvJitLinkCreate_12_8(&handle);
    return 0;
}
int vk_icdNegotiateLoaderICDInterfaceVersion(unsigned *version) {
    void *handle = 0;
    __nvJitLinkCreate_12_8(&handle);
    *version = 5;
    return 0;
}
