/*
 * c-host: a minimal C host that runs the enclave-heap agent, built from nothing but
 * enclave_heap_host.h and libenclave_heap_host.a (see README.md).
 *
 * There is no enclave here (this example must build without the Open Enclave SDK): a heap
 * counter in this process stands in for it, fake_ecall_mallinfo() stands in for our ECALL and
 * fake_ocall_push_mallinfo() for our OCALL. The comments say what a real OE host does instead.
 *
 * Usage: c-host SOCKET_PATH [--busy]
 *   Serves the enclave "app" on SOCKET_PATH until SIGTERM or SIGINT, then stops and exits 0.
 *   --busy: the stand-in ECALL fails with OE_OUT_OF_THREADS, as when every enclave thread (TCS)
 *   is busy, so the agent answers with the snapshot the "enclave" pushed.
 * Once serving, it prints one line with the figures it reports, then "stopped" on the way out.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "enclave_heap_host.h"

/* oe_result_t values (openenclave/bits/result.h); a real host includes the SDK's header. */
#define OE_OK 0u
#define OE_OUT_OF_THREADS 6u

/* The stand-in for the enclave and its heap (a real host has an oe_enclave_t* instead). */
struct fake_enclave {
    pthread_mutex_t lock;
    enclave_heap_mallinfo_t heap;
    int busy;
};

/*
 * Stands in for the ECALL. A real host calls the oeedger8r-generated proxy here:
 *     oe_result_t retval = OE_FAILURE;
 *     oe_result_t result = enclave_heap_ecall_mallinfo((oe_enclave_t*)context, &retval,
 *                                                      (oe_mallinfo_t*)out);
 *     return result != OE_OK ? (uint32_t)result : (uint32_t)retval;
 * Called on an agent thread, never twice at once for this enclave.
 */
static uint32_t fake_ecall_mallinfo(void* context, enclave_heap_mallinfo_t* out) {
    struct fake_enclave* enclave = context;
    uint32_t result = OE_OK;
    pthread_mutex_lock(&enclave->lock);
    if (enclave->busy) {
        result = OE_OUT_OF_THREADS;
    } else {
        *out = enclave->heap;
    }
    pthread_mutex_unlock(&enclave->lock);
    return result;
}

static enclave_heap_agent* agent;

/*
 * Stands in for our OCALL. A real host defines, for the generated OCALL table,
 *     void enclave_heap_ocall_push_mallinfo(const oe_mallinfo_t* info)
 * with this body, and the enclave calls it through enclave_heap_publish().
 */
static void fake_ocall_push_mallinfo(const enclave_heap_mallinfo_t* info) {
    if (enclave_heap_agent_push(agent, "app", info) != ENCLAVE_HEAP_OK) {
        fprintf(stderr, "c-host: push: %s\n", enclave_heap_last_error());
    }
}

static int fail(const char* what) {
    fprintf(stderr, "c-host: %s: %s\n", what, enclave_heap_last_error());
    enclave_heap_agent_free(agent);
    return 1;
}

int main(int argc, char** argv) {
    static struct fake_enclave enclave = {
        PTHREAD_MUTEX_INITIALIZER,
        /* max = NumHeapPages (256) * 4096; current and peak as OE's dlmalloc might report. */
        {256 * 4096, 123456, 234567},
        0,
    };
    enclave_heap_agent_options options = ENCLAVE_HEAP_AGENT_OPTIONS_INIT;
    enclave_heap_mallinfo_t pushed;
    sigset_t stop_signals;
    int signal_number = 0;

    if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "--busy") != 0)) {
        fprintf(stderr, "usage: %s SOCKET_PATH [--busy]\n", argv[0]);
        return 2;
    }
    enclave.busy = argc == 3;

    /* Wait for SIGTERM/SIGINT with sigwait: block them before any thread starts. (The agent's
     * threads block them anyway; this thread must too, or the default action would kill us.) */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    if (pthread_sigmask(SIG_BLOCK, &stop_signals, NULL) != 0) {
        fprintf(stderr, "c-host: cannot block SIGTERM and SIGINT\n");
        return 1;
    }

    options.socket_path = argv[1];
    agent = enclave_heap_agent_new(&options);
    if (agent == NULL) {
        return fail("cannot create the agent");
    }
    if (enclave_heap_agent_add_enclave(agent, "app", fake_ecall_mallinfo, &enclave) !=
        ENCLAVE_HEAP_OK) {
        return fail("cannot add the enclave");
    }
    if (enclave_heap_agent_start(agent) != ENCLAVE_HEAP_OK) {
        return fail("cannot start the agent");
    }

    /* The enclave pushes a snapshot from one of its own threads (enclave_heap_publish). */
    pushed = enclave.heap;
    pushed.current_allocated_heap_size = 111111;
    fake_ocall_push_mallinfo(&pushed);

    printf("c-host: serving enclave app on %s: max_total_heap_size=%zu "
           "current_allocated_heap_size=%zu peak_allocated_heap_size=%zu pushed_current=%zu\n",
           argv[1], enclave.heap.max_total_heap_size, enclave.heap.current_allocated_heap_size,
           enclave.heap.peak_allocated_heap_size, pushed.current_allocated_heap_size);
    fflush(stdout);

    if (sigwait(&stop_signals, &signal_number) != 0) {
        fprintf(stderr, "c-host: sigwait failed\n");
    }

    /* Stop reading first, then terminate the enclave (a real host: oe_terminate_enclave), which
     * ends its pushes, then free the agent. */
    enclave_heap_agent_stop(agent);
    enclave_heap_agent_free(agent);
    agent = NULL;
    printf("c-host: stopped on signal %d\n", signal_number);
    return 0;
}
