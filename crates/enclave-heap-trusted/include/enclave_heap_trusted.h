/*
 * enclave_heap_trusted.h: what the enclave-heap-trusted staticlib offers C and C++ enclave code.
 *
 * The ECALL itself needs no declaration here: oeedger8r declares
 *     oe_result_t enclave_heap_ecall_mallinfo(oe_mallinfo_t* info);
 * in the generated enclave_heap_t.h (or <your app>_t.h when enclave_heap.edl is imported), and
 * the staticlib defines it.
 */
#ifndef ENCLAVE_HEAP_TRUSTED_H
#define ENCLAVE_HEAP_TRUSTED_H

#include <openenclave/bits/result.h>

OE_EXTERNC_BEGIN

/*
 * Reads the enclave allocator (oe_allocator_mallinfo, serialised with the ECALL) and pushes the
 * snapshot to the host through the OCALL enclave_heap_ocall_push_mallinfo.
 *
 * Returns the allocator's failure, or the OCALL's transport result (OE_OK once the host's
 * handler has run). Callable from any enclave thread.
 */
oe_result_t enclave_heap_publish(void);

OE_EXTERNC_END

#endif /* ENCLAVE_HEAP_TRUSTED_H */
