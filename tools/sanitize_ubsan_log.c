/* Compiled into tools/sanitize.sh's build of the C core only (the script copies it into
 * its copy of csrc/).  It sends UBSan's reports to the file $UVCFFI_UBSAN_LOG.<pid>.
 *
 * Why it is needed: with gcc, -fsanitize=address,undefined links two runtimes, libasan and
 * libubsan, each with its own copy of sanitizer_common.  The preloaded libasan comes first
 * in symbol lookup, so libubsan's start-up call to __sanitizer_set_report_path (with
 * UBSAN_OPTIONS's log_path) reaches libasan's copy, and UBSan goes on writing to stderr
 * (GCC bug 94328), where a test that captures a child's stderr would swallow it.  dlsym on
 * libubsan's own handle finds libubsan's copy of the function.  The constructor runs when
 * the extension is loaded, in every process that imports it. */
#include <dlfcn.h>
#include <stdlib.h>

__attribute__((constructor)) static void uvc_sanitize_ubsan_log(void) {
    const char *path = getenv("UVCFFI_UBSAN_LOG");
    void *ubsan = dlopen("libubsan.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (path == NULL || ubsan == NULL)
        return;
    void (*set_path)(const char *) = (void (*)(const char *))dlsym(ubsan, "__sanitizer_set_report_path");
    if (set_path != NULL)
        set_path(path);
    dlclose(ubsan);
}
