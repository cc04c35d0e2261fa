/*
 * enclave_heap_host.h: run the enclave-heap-exporter agent in a C or C++ Open Enclave host.
 *
 * The agent serves this process's enclave heap figures (oe_mallinfo_t) as JSON over HTTP/1.1 on a
 * Unix socket (and/or TCP) to a sidecar enclave-heap-exporter:
 *     GET /node/memory            the first enclave added (CCF's /node/memory format)
 *     GET /enclaves/{name}/memory the enclave added under {name}
 *     GET /enclaves               every enclave
 * It reads an enclave only when asked, at most once per min_interval, one read at a time per
 * enclave, by calling the callback you give it, which performs our ECALL.
 *
 * Library: libenclave_heap_host.a (or .so) from the enclave-heap-host Rust crate, built without
 * its `openenclave` feature (the default; with it the library defines the OCALL
 * enclave_heap_ocall_push_mallinfo itself, which clashes with yours). Link the static library
 * with the system libraries it needs:
 *     cc ... libenclave_heap_host.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
 * This header does not need the Open Enclave SDK; it is C99 and C++ compatible.
 *
 * Conventions:
 *   - Functions that can fail return ENCLAVE_HEAP_OK (0) or a negative ENCLAVE_HEAP_ERR_* code
 *     (enclave_heap_agent_new returns NULL instead), and leave a message for
 *     enclave_heap_last_error() on the calling thread.
 *   - Every pointer argument is checked for NULL (ENCLAVE_HEAP_ERR_NULL). A non-NULL pointer
 *     must be valid: a freed or foreign agent handle is undefined behaviour.
 *   - Strings are NUL-terminated and copied during the call: the caller may free or reuse them
 *     as soon as the call returns. Names and addresses must be UTF-8 (ENCLAVE_HEAP_ERR_INVALID
 *     otherwise); socket paths are taken as bytes.
 *   - No Rust panic crosses into C: an internal error returns ENCLAVE_HEAP_ERR_PANIC.
 *
 * Example (one enclave; error handling shortened):
 *
 *     #include <openenclave/host.h>
 *     #include "enclave_heap_u.h"          // oeedger8r output for enclave_heap.edl
 *     #include "enclave_heap_host.h"
 *
 *     static enclave_heap_agent* agent;
 *
 *     // Performs our ECALL. Runs on an agent thread, never twice at once for one enclave.
 *     static uint32_t read_heap(void* context, enclave_heap_mallinfo_t* out) {
 *         oe_result_t retval = OE_FAILURE;
 *         oe_result_t result = enclave_heap_ecall_mallinfo((oe_enclave_t*)context, &retval,
 *                                                          (oe_mallinfo_t*)out);
 *         return result != OE_OK ? (uint32_t)result : (uint32_t)retval;
 *     }
 *
 *     // Our OCALL: the enclave pushes a snapshot (enclave_heap_publish()).
 *     void enclave_heap_ocall_push_mallinfo(const oe_mallinfo_t* info) {
 *         enclave_heap_agent_push(agent, "app", (const enclave_heap_mallinfo_t*)info);
 *     }
 *
 *     enclave_heap_agent_options options = ENCLAVE_HEAP_AGENT_OPTIONS_INIT;
 *     options.socket_path = "/run/enclave-heap/agent.sock";
 *     agent = enclave_heap_agent_new(&options);
 *     if (agent == NULL
 *         || enclave_heap_agent_add_enclave(agent, "app", read_heap, enclave) != ENCLAVE_HEAP_OK
 *         || enclave_heap_agent_start(agent) != ENCLAVE_HEAP_OK) {
 *         fprintf(stderr, "enclave heap agent: %s\n", enclave_heap_last_error());
 *     }
 *     ... run the application ...
 *     enclave_heap_agent_stop(agent);   // no more reads: the enclave may go
 *     oe_terminate_enclave(enclave);    // no more pushes: the agent may go
 *     enclave_heap_agent_free(agent);
 */
#ifndef ENCLAVE_HEAP_HOST_H
#define ENCLAVE_HEAP_HOST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes. */
/** Success. */
#define ENCLAVE_HEAP_OK 0
/** A required pointer argument was NULL. */
#define ENCLAVE_HEAP_ERR_NULL (-1)
/** An invalid argument: not UTF-8, a bad enclave name or TCP address, a name already added,
 *  options not initialised with ENCLAVE_HEAP_AGENT_OPTIONS_INIT, no socket path nor address. */
#define ENCLAVE_HEAP_ERR_INVALID (-2)
/** Not allowed now: adding an enclave after start, starting twice or after stop, starting with
 *  no enclave. */
#define ENCLAVE_HEAP_ERR_STATE (-3)
/** The agent could not start: the socket (its directory must exist and be owned by the host's
 *  user or root; another live agent may be on it) or the TCP address could not be bound, or its
 *  thread could not be created. The agent is unchanged: fix the cause and call
 *  enclave_heap_agent_start again, or free it. */
#define ENCLAVE_HEAP_ERR_START (-4)
/** enclave_heap_agent_push: no enclave of that name was added. */
#define ENCLAVE_HEAP_ERR_UNKNOWN_ENCLAVE (-5)
/** An internal error in the library (a caught Rust panic). Free the agent. */
#define ENCLAVE_HEAP_ERR_PANIC (-6)

/**
 * The enclave allocator's figures, in bytes: the same three size_t fields, in the same order and
 * with the same layout as Open Enclave's oe_mallinfo_t (openenclave/advanced/mallinfo.h), so a
 * host may cast an oe_mallinfo_t* to an enclave_heap_mallinfo_t* and back.
 */
typedef struct enclave_heap_mallinfo_t {
    /** Heap size: NumHeapPages * 4096 with OE's allocators. */
    size_t max_total_heap_size;
    /** Bytes allocated now (OE's dlmalloc counts chunk headers). */
    size_t current_allocated_heap_size;
    /** Peak bytes allocated (OE's dlmalloc reports its peak footprint, free chunks included). */
    size_t peak_allocated_heap_size;
} enclave_heap_mallinfo_t;

/** An agent. Opaque: create it with enclave_heap_agent_new, free it with enclave_heap_agent_free. */
typedef struct enclave_heap_agent enclave_heap_agent;

/**
 * Performs our ECALL for one enclave, e.g.
 *     enclave_heap_ecall_mallinfo(enclave, &retval, (oe_mallinfo_t*)out)
 * and returns an OE result (oe_result_t numbering, 0 = OE_OK): the ECALL's own result if it
 * failed (OE_OUT_OF_THREADS when every enclave thread is busy, ...), otherwise the enclave's
 * retval. *out starts zeroed and is used only when the callback returns 0.
 *
 * Threading: called on one of the agent's threads, not the thread that added it; never twice at
 * the same time for one enclave (calls for different enclaves may overlap). It may block as long
 * as the ECALL takes; requests wait at most timeout_ms for it. The agent's threads block
 * asynchronous signals (SIGPIPE, SIGINT, SIGTERM, ...; not SIGSEGV, SIGBUS, SIGFPE, SIGILL,
 * SIGTRAP, SIGSYS, SIGABRT, which OE's exception handling needs), and so does the callback.
 *
 * It must return normally: a C++ exception or longjmp out of it is undefined behaviour.
 * It and its context must stay usable until enclave_heap_agent_stop (or _free) returns: that
 * waits for a call in progress, and no call starts afterwards.
 */
typedef uint32_t (*enclave_heap_read_fn)(void* context, enclave_heap_mallinfo_t* out);

/**
 * How the agent serves. Initialise with ENCLAVE_HEAP_AGENT_OPTIONS_INIT, then set fields; at least
 * one of socket_path and tcp_address must be set.
 */
typedef struct enclave_heap_agent_options {
    /** sizeof(enclave_heap_agent_options), set by ENCLAVE_HEAP_AGENT_OPTIONS_INIT; a mismatch
     *  (a header from another version, or a zeroed struct) is ENCLAVE_HEAP_ERR_INVALID. */
    uint32_t struct_size;
    /** How long a request waits for a read, in ms. 0: 2000. */
    uint32_t timeout_ms;
    /** Minimum time between the starts of two reads of one enclave, in ms; requests in between
     *  get the last read. 0: 1000. */
    uint32_t min_interval_ms;
    /** How old a snapshot from enclave_heap_agent_push may be and still answer for a read that
     *  failed with OE_OUT_OF_THREADS, in ms. 0: 30000. */
    uint32_t push_max_age_ms;
    /** Unix socket path, or NULL. Its directory must exist. The socket is created with mode 0600
     *  (see socket_group) and removed by enclave_heap_agent_free; a stale socket left by a dead
     *  process is replaced, a live one is an error. */
    const char* socket_path;
    /** TCP address "IP:port" to serve on as well (e.g. "127.0.0.1:9746"), or NULL. No TLS and
     *  no authentication: prefer the Unix socket, or loopback. */
    const char* tcp_address;
    /** -1: socket mode 0600 (only this user may connect). A group id (0 to 4294967295): the
     *  socket gets that group and mode 0660, for an exporter running under another user. */
    int64_t socket_group;
} enclave_heap_agent_options;

/** The defaults: no listener yet, socket mode 0600, default timings. */
#define ENCLAVE_HEAP_AGENT_OPTIONS_INIT \
    { (uint32_t)sizeof(enclave_heap_agent_options), 0, 0, 0, NULL, NULL, -1 }

/**
 * Creates an agent with `options` (read and copied during the call). It does not serve until
 * enclave_heap_agent_start.
 *
 * Returns the agent, or NULL (see enclave_heap_last_error): options NULL, struct_size wrong,
 * tcp_address not UTF-8 or not IP:port, socket_path empty, socket_group out of range, neither
 * socket_path nor tcp_address given.
 */
enclave_heap_agent* enclave_heap_agent_new(const enclave_heap_agent_options* options);

/**
 * Adds an enclave under `name` (1-64 characters of A-Z a-z 0-9 _ - . :, not "." or "..";
 * copied), read by read(context, out). The first enclave added answers GET /node/memory. Only
 * before enclave_heap_agent_start. `context` is passed to `read` as is and may be NULL.
 *
 * Returns ENCLAVE_HEAP_OK, or ENCLAVE_HEAP_ERR_NULL (agent, name or read NULL),
 * ENCLAVE_HEAP_ERR_INVALID (bad or duplicate name), ENCLAVE_HEAP_ERR_STATE (already started).
 * Thread-safe.
 */
int enclave_heap_agent_add_enclave(enclave_heap_agent* agent, const char* name,
                                   enclave_heap_read_fn read, void* context);

/**
 * Restricts who is served on the socket by the credentials the kernel records when a peer
 * connects (SO_PEERCRED): once any uid or gid is allowed, only a peer whose uid is an allowed uid
 * or whose primary gid is an allowed gid is served; any other gets HTTP 403 and its connection is
 * closed, logged once per (uid, gid). With none allowed (the default), every peer that the
 * socket's mode lets connect is served. Supplementary groups count for the mode only, so allow
 * the exporter's uid when it reaches a 0660 socket through a supplementary group. Peer checks
 * need the Unix socket only: enclave_heap_agent_start fails with ENCLAVE_HEAP_ERR_INVALID when a
 * tcp_address is set too. Only before enclave_heap_agent_start; adding an id twice is harmless.
 *
 * Returns ENCLAVE_HEAP_OK, or ENCLAVE_HEAP_ERR_NULL, ENCLAVE_HEAP_ERR_STATE (already started).
 * Thread-safe.
 */
int enclave_heap_agent_allow_peer_uid(enclave_heap_agent* agent, uint32_t uid);

/** As enclave_heap_agent_allow_peer_uid, for a peer's primary group id. */
int enclave_heap_agent_allow_peer_gid(enclave_heap_agent* agent, uint32_t gid);

/**
 * Binds the socket and/or TCP address and starts serving on the agent's own threads; returns
 * once it is listening. Whatever this thread's signal mask, the agent's threads block
 * asynchronous signals (see enclave_heap_read_fn), so SIGPIPE from a client that hangs up never
 * reaches the host and SIGTERM/SIGINT go to the host's own threads.
 *
 * Returns ENCLAVE_HEAP_OK, or ENCLAVE_HEAP_ERR_NULL, ENCLAVE_HEAP_ERR_STATE (already started or
 * stopped, or no enclave added), ENCLAVE_HEAP_ERR_INVALID (allowed peers with a tcp_address),
 * ENCLAVE_HEAP_ERR_START (cannot bind; the agent may be started again).
 * Thread-safe.
 */
int enclave_heap_agent_start(enclave_heap_agent* agent);

/**
 * Records a snapshot that enclave `name` pushed: call it from your implementation of our OCALL,
 * enclave_heap_ocall_push_mallinfo (cast its oe_mallinfo_t*). `*info` is copied. When a read of
 * that enclave fails with OE_OUT_OF_THREADS, the agent answers with the latest push instead if
 * it is younger than push_max_age_ms (reported with "origin":"ocall_push" and its age); other
 * failures are reported as they are.
 *
 * An OCALL does not say which enclave made it: with several enclaves, tell them apart by the
 * host thread (an OCALL runs on the thread that made the ECALL it comes from).
 *
 * Returns ENCLAVE_HEAP_OK, or ENCLAVE_HEAP_ERR_NULL, ENCLAVE_HEAP_ERR_INVALID (name not UTF-8),
 * ENCLAVE_HEAP_ERR_UNKNOWN_ENCLAVE. Thread-safe, fast (never waits for a read), and allowed before
 * and after enclave_heap_agent_start, including from inside a read callback.
 */
int enclave_heap_agent_push(enclave_heap_agent* agent, const char* name,
                            const enclave_heap_mallinfo_t* info);

/**
 * Stops serving for good: stops accepting, lets requests in progress finish (at most 5 s),
 * removes the socket file (if it is still the one the agent created), and waits for a read
 * callback still running (an ECALL cannot be cancelled). No callback runs after it returns, so
 * stop the agent before terminating its enclaves. Pushes are still accepted (and ignored), so an
 * enclave may keep pushing until it is terminated; then free the agent. The agent cannot be
 * started again.
 *
 * Returns ENCLAVE_HEAP_OK (also when not started or already stopped), or ENCLAVE_HEAP_ERR_NULL.
 * Thread-safe; never call it from inside a read callback.
 */
int enclave_heap_agent_stop(enclave_heap_agent* agent);

/**
 * Stops the agent as enclave_heap_agent_stop does (if not done yet), then frees it. NULL is a
 * no-op.
 *
 * No other call on this agent may be in progress or follow, pushes included: if the enclave may
 * still push, call enclave_heap_agent_stop, terminate the enclave, then free. Never call it from
 * inside a read callback.
 */
void enclave_heap_agent_free(enclave_heap_agent* agent);

/**
 * The message of the last failed call on the calling thread, or NULL if none failed on it. The
 * string belongs to the library; it stays valid until the next failing call on the same thread.
 * Successful calls leave it unchanged.
 */
const char* enclave_heap_last_error(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* ENCLAVE_HEAP_HOST_H */
