/* soak's Triton callbacks for requests in system memory, in C.

   Triton calls the output allocator, the buffer release, the response callback and the
   request release on its own threads (the python backend: on the model instance's thread,
   which starts no other request until they return). As Python callbacks each of them had
   to create a Python thread state and take the GIL: about 25 us each, six per request,
   more than Triton's own work on a small model. Here they only allocate, free and hand
   over: a request's slot collects its responses and its release, and soak's thread waits
   on the slot (through ctypes, without the GIL), then reads and deletes the responses
   itself. Nothing here calls into Python.

   A slot is made per request and freed by soak once the request is complete and released.
   A slot that timed out is abandoned: never freed (Triton may still call back), and each
   response that still arrives is deleted at once. */

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

typedef void* (*error_new_fn)(int code, const char* message);
typedef void* (*response_delete_fn)(void* response);
typedef void (*error_delete_fn)(void* error);

static error_new_fn error_new;
static response_delete_fn response_delete;
static error_delete_fn error_delete;
static int error_internal;

enum { MEMORY_CPU = 0, RESPONSE_FINAL = 1, RELEASE_ALL = 1 };

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  void** responses; /* handed over, not yet taken by soak */
  size_t count, cap;
  int final, released, abandoned;
  int deleted; /* responses deleted here: they came after the slot was abandoned */
  int lost;    /* responses that could not be kept (no memory): deleted, counted */
} soak_slot;

/* The version of this file's interface; soak refuses a library that answers otherwise. */
int
soak_native_version(void)
{
  return 1;
}

void
soak_native_init(
    void* triton_error_new, void* triton_response_delete, void* triton_error_delete,
    int internal_code)
{
  error_new = (error_new_fn)triton_error_new;
  response_delete = (response_delete_fn)triton_response_delete;
  error_delete = (error_delete_fn)triton_error_delete;
  error_internal = internal_code;
}

static void
delete_response(void* response)
{
  void* err = response_delete(response);
  if (err != NULL) {
    error_delete(err);
  }
}

soak_slot*
soak_slot_new(void)
{
  soak_slot* s = calloc(1, sizeof(soak_slot));
  if (s == NULL) {
    return NULL;
  }
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, &attr);
  pthread_condattr_destroy(&attr);
  return s;
}

void
soak_slot_free(soak_slot* s)
{
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  free(s->responses);
  free(s);
}

/* 1 once the final response came and the request was released, 0 at the timeout. */
int
soak_slot_wait(soak_slot* s, double timeout_s)
{
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  if (timeout_s < 0) {
    timeout_s = 0;
  }
  time_t whole = (time_t)timeout_s;
  deadline.tv_sec += whole;
  deadline.tv_nsec += (long)((timeout_s - (double)whole) * 1e9);
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec += 1;
    deadline.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&s->mu);
  int rc = 0;
  while (!(s->final && s->released) && rc != ETIMEDOUT) {
    rc = pthread_cond_timedwait(&s->cv, &s->mu, &deadline);
  }
  int done = s->final && s->released;
  pthread_mutex_unlock(&s->mu);
  return done;
}

/* Moves up to `max` handed-over responses, in arrival order, into `out`; returns how many. */
size_t
soak_slot_take(soak_slot* s, void** out, size_t max)
{
  pthread_mutex_lock(&s->mu);
  size_t n = s->count < max ? s->count : max;
  for (size_t i = 0; i < n; ++i) {
    out[i] = s->responses[i];
  }
  for (size_t i = n; i < s->count; ++i) {
    s->responses[i - n] = s->responses[i];
  }
  s->count -= n;
  pthread_mutex_unlock(&s->mu);
  return n;
}

/* The slot's state: final, released, deleted, lost (see soak_slot). */
void
soak_slot_state(soak_slot* s, int out[4])
{
  pthread_mutex_lock(&s->mu);
  out[0] = s->final;
  out[1] = s->released;
  out[2] = s->deleted;
  out[3] = s->lost;
  pthread_mutex_unlock(&s->mu);
}

/* Nobody waits for this request any more: what came is deleted, and what comes will be. */
void
soak_slot_abandon(soak_slot* s)
{
  pthread_mutex_lock(&s->mu);
  s->abandoned = 1;
  for (size_t i = 0; i < s->count; ++i) {
    delete_response(s->responses[i]);
  }
  s->deleted += (int)s->count;
  s->count = 0;
  pthread_mutex_unlock(&s->mu);
}

/* TRITONSERVER_InferenceResponseCompleteFn_t; userp is the slot. */
void
soak_response(void* response, uint32_t flags, void* userp)
{
  soak_slot* s = userp;
  pthread_mutex_lock(&s->mu);
  if (response != NULL) {
    if (s->abandoned) {
      delete_response(response);
      s->deleted += 1;
    } else {
      if (s->count == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 4;
        void** grown = realloc(s->responses, cap * sizeof(void*));
        if (grown != NULL) {
          s->responses = grown;
          s->cap = cap;
        }
      }
      if (s->count < s->cap) {
        s->responses[s->count++] = response;
      } else {
        s->lost += 1;
        delete_response(response);
      }
    }
  }
  if (flags & RESPONSE_FINAL) {
    s->final = 1;
    pthread_cond_broadcast(&s->cv);
  }
  pthread_mutex_unlock(&s->mu);
}

/* TRITONSERVER_InferenceRequestReleaseFn_t; userp is the slot. */
void
soak_request_released(void* request, uint32_t flags, void* userp)
{
  (void)request;
  if (!(flags & RELEASE_ALL)) {
    return;
  }
  soak_slot* s = userp;
  pthread_mutex_lock(&s->mu);
  s->released = 1;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

/* TRITONSERVER_ResponseAllocatorAllocFn_t: system memory, whatever Triton preferred. */
void*
soak_alloc(
    void* allocator, const char* name, size_t size, int preferred_type,
    int64_t preferred_id, void* userp, void** buffer, void** buffer_userp,
    int* actual_type, int64_t* actual_id)
{
  (void)allocator;
  (void)name;
  (void)preferred_type;
  (void)preferred_id;
  (void)userp;
  *buffer_userp = NULL;
  *actual_type = MEMORY_CPU;
  *actual_id = 0;
  *buffer = NULL;
  if (size == 0) {
    return NULL;
  }
  *buffer = malloc(size);
  if (*buffer == NULL) {
    return error_new(error_internal, "soak allocator: malloc failed");
  }
  return NULL;
}

/* TRITONSERVER_ResponseAllocatorReleaseFn_t */
void*
soak_release_buffer(
    void* allocator, void* buffer, void* buffer_userp, size_t size, int memory_type,
    int64_t memory_id)
{
  (void)allocator;
  (void)buffer_userp;
  (void)size;
  (void)memory_type;
  (void)memory_id;
  free(buffer);
  return NULL;
}
