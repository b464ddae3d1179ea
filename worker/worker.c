/* The worker's frame loop and the function ABI services (flint_output_write & co).
 *
 * Threading: the main thread owns the channel's read side. With max_concurrency == 1 (the
 * default) an invoke runs inline on the main thread: request in, result out, no thread hop on
 * the hot path. With more, invokes go to a fixed pool of executor threads and the main thread
 * keeps reading (cancels, pings). Frame writes from any thread are serialised by `wlock` and
 * go out with a single write(2) each.
 *
 * The worker is pid 1 of its pid namespace: it reaps orphans (SIGCHLD) and exits when flintd
 * closes the channel, which tears the whole sandbox down with it. */
#include "worker.h"
#include "flint/buf.h"
#include "flint/cleanup.h"
#include "flint/frame.h"
#include "flint/util.h"
#include "flint/worker/v1/worker.pb-c.h"
#include "flint-config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef Flint__Worker__V1__Frame frame_t;

#define MAX_WEIGHTS 64
#define MAX_CONFIG 128
#define MAX_INFLIGHT 1024

typedef struct weight_s {
  char *name;
  char *path;
  const void *addr;
  size_t len;
} weight_t;

struct flint_output_s {
  flint_ctx_t *ctx;
  uint64_t id;
  bool streaming;
  flint_buf_t buf;
  uint64_t deadline_ns;   /* CLOCK_MONOTONIC; 0 = none */
  volatile int cancelled;
  bool failed;
  int code;
  char msg[512];
};

typedef struct job_s {
  struct job_s *next;
  frame_t *frame;          /* owns the unpacked Invoke */
} job_t;

struct flint_ctx_s {
  int chan;
  pthread_mutex_t wlock;
  bool initialised;              /* the function's init succeeded: its fini runs at the end */

  char *endpoint;
  uint64_t version;
  char replica_id[128];
  uint64_t max_payload;
  uint32_t max_concurrency;
  uint32_t cpu_millis;
  char *path;
  char *draft_path;

  char *config_keys[MAX_CONFIG];
  char *config_vals[MAX_CONFIG];
  size_t n_config;
  weight_t weights[MAX_WEIGHTS];
  size_t n_weights;
  pthread_mutex_t weights_lock;

  flint_function_t fn;
  void *user;

  /* error of the init / hook in progress (single-threaded phases) */
  char error[1024];

  /* in-flight outputs, for Cancel frames (concurrency > 1) */
  pthread_mutex_t inflight_lock;
  flint_output_t *inflight[MAX_INFLIGHT];

  /* executor pool (concurrency > 1) */
  pthread_mutex_t qlock;
  pthread_cond_t qcond;
  job_t *qhead, *qtail;
  pthread_t *threads;
  size_t nthreads;
  bool stopping;

  uint64_t completed;
};

/* ---- ABI services --------------------------------------------------------------------- */

int
flint_output_write (flint_output_t *out, const void *data, size_t len)
{
  flint_ctx_t *ctx = out->ctx;

  if (out->failed || flint_output_cancelled (out))
    return -1;
  if (out->streaming)
    {
      Flint__Worker__V1__Chunk chunk = FLINT__WORKER__V1__CHUNK__INIT;
      frame_t f = FLINT__WORKER__V1__FRAME__INIT;
      _cleanup_free_ uint8_t *buf = NULL;
      size_t n;
      int r;

      if (len > ctx->max_payload)
        {
          flint_fail (out, FLINT_FN_RESOURCE_EXHAUSTED, "a streamed chunk of %zu bytes exceeds the payload limit of %llu bytes",
                      len, (unsigned long long) ctx->max_payload);
          return -1;
        }
      chunk.request_id = out->id;
      chunk.data.data = (uint8_t *) data;
      chunk.data.len = len;
      f.msg_case = FLINT__WORKER__V1__FRAME__MSG_CHUNK;
      f.chunk = &chunk;
      if (flint_frame_encode (&f.base, UINT32_MAX, &buf, &n) < 0)
        return -1;
      pthread_mutex_lock (&ctx->wlock);
      r = flint_write_all (ctx->chan, buf, n);
      pthread_mutex_unlock (&ctx->wlock);
      return r < 0 ? -1 : 0;
    }
  if (out->buf.len + len > ctx->max_payload)
    {
      flint_fail (out, FLINT_FN_RESOURCE_EXHAUSTED, "output exceeds the payload limit of %llu bytes",
                  (unsigned long long) ctx->max_payload);
      return -1;
    }
  flint_buf_append (&out->buf, data, len);
  return 0;
}

int
flint_output_cancelled (const flint_output_t *out)
{
  if (out->cancelled)
    return 1;
  return out->deadline_ns && flint_now_ns () > out->deadline_ns;
}

int
flint_fail (flint_output_t *out, int code, const char *fmt, ...)
{
  va_list ap;

  if (out->failed)
    return -1; /* keep the first cause */
  out->failed = true;
  out->code = code > 0 && code <= 16 ? code : FLINT_FN_UNKNOWN;
  va_start (ap, fmt);
  vsnprintf (out->msg, sizeof out->msg, fmt, ap);
  va_end (ap);
  return -1;
}

int
flint_set_error (flint_ctx_t *ctx, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (ctx->error, sizeof ctx->error, fmt, ap);
  va_end (ap);
  return -1;
}

uint32_t
flint__ctx_max_concurrency (const flint_ctx_t *ctx)
{
  return ctx->max_concurrency;
}

uint32_t
flint__ctx_cpu_millis (const flint_ctx_t *ctx)
{
  return ctx->cpu_millis;
}

const char *
flint__ctx_path (const flint_ctx_t *ctx)
{
  return ctx->path;
}

const char *
flint__ctx_draft_path (const flint_ctx_t *ctx)
{
  return ctx->draft_path;
}

const char *
flint__ctx_error (flint_ctx_t *ctx)
{
  return ctx->error;
}

void
flint__ctx_clear_error (flint_ctx_t *ctx)
{
  ctx->error[0] = '\0';
}

int
flint_weights_map (flint_ctx_t *ctx, const char *name, const void **data_out, size_t *len_out)
{
  weight_t *w = NULL;
  int ret = -1;

  pthread_mutex_lock (&ctx->weights_lock);
  for (size_t i = 0; i < ctx->n_weights; i++)
    if (strcmp (ctx->weights[i].name, name) == 0)
      w = &ctx->weights[i];
  if (w == NULL)
    {
      flint_set_error (ctx, "weights `%s` are not declared in the manifest", name);
      goto out;
    }
  if (w->addr == NULL)
    {
      _cleanup_close_ int fd = open (w->path, O_RDONLY | O_CLOEXEC);
      struct stat st;
      void *p;

      if (fd < 0 || fstat (fd, &st) < 0)
        {
          flint_set_error (ctx, "weights `%s`: open %s: %s", name, w->path, strerror (errno));
          goto out;
        }
      if (st.st_size == 0)
        p = NULL;
      else
        {
          /* MAP_SHARED + read-only: the pages belong to the node's weight store (tmpfs), so
           * every replica shares them and CRIU records the mapping instead of its content. */
          p = mmap (NULL, (size_t) st.st_size, PROT_READ, MAP_SHARED, fd, 0);
          if (p == MAP_FAILED)
            {
              flint_set_error (ctx, "weights `%s`: mmap: %s", name, strerror (errno));
              goto out;
            }
        }
      w->addr = p ? p : (const void *) "";
      w->len = (size_t) st.st_size;
    }
  *data_out = w->addr;
  *len_out = w->len;
  ret = 0;
out:
  pthread_mutex_unlock (&ctx->weights_lock);
  return ret;
}

const char *
flint_config (flint_ctx_t *ctx, const char *key)
{
  for (size_t i = 0; i < ctx->n_config; i++)
    if (strcmp (ctx->config_keys[i], key) == 0)
      return ctx->config_vals[i];
  return NULL;
}

const char *
flint_replica_id (flint_ctx_t *ctx)
{
  return ctx->replica_id;
}

void
flint_set_user (flint_ctx_t *ctx, void *user)
{
  ctx->user = user;
}

void *
flint_user (flint_ctx_t *ctx)
{
  return ctx->user;
}

/* The request the calling thread is running (0 outside an invoke), for flint_log_line. */
static __thread uint64_t current_request;

void
flint_log_line (flint_ctx_t *ctx, const char *fmt, ...)
{
  char line[2048];
  va_list ap;
  int n = 0, k;

  (void) ctx;
  if (current_request)
    n = snprintf (line, sizeof line, "[request %llu] ", (unsigned long long) current_request);
  va_start (ap, fmt);
  k = vsnprintf (line + n, sizeof line - 1 - (size_t) n, fmt, ap);
  va_end (ap);
  n = k < 0 ? -1 : n + k;
  if (n < 0)
    return;
  if ((size_t) n > sizeof line - 2)
    n = (int) sizeof line - 2;
  line[n++] = '\n';
  (void) !write (STDERR_FILENO, line, (size_t) n);
}

/* ---- frames out ------------------------------------------------------------------------ */

static int
send_frame (flint_ctx_t *ctx, frame_t *f)
{
  _cleanup_free_ uint8_t *buf = NULL;
  size_t n;
  int r = flint_frame_encode (&f->base, UINT32_MAX, &buf, &n);

  if (r < 0)
    return r;
  pthread_mutex_lock (&ctx->wlock);
  r = flint_write_all (ctx->chan, buf, n);
  pthread_mutex_unlock (&ctx->wlock);
  return r;
}

static int
send_result (flint_ctx_t *ctx, uint64_t id, int code, const char *message, const void *data, size_t len)
{
  Flint__Worker__V1__Result res = FLINT__WORKER__V1__RESULT__INIT;
  frame_t f = FLINT__WORKER__V1__FRAME__INIT;

  res.request_id = id;
  res.code = code;
  res.message = (char *) (message ? message : "");
  res.data.data = (uint8_t *) data;
  res.data.len = len;
  f.msg_case = FLINT__WORKER__V1__FRAME__MSG_RESULT;
  f.result = &res;
  return send_frame (ctx, &f);
}

/* ---- invokes -------------------------------------------------------------------------- */

static void
inflight_set (flint_ctx_t *ctx, flint_output_t *out, bool add)
{
  size_t slot = out->id % MAX_INFLIGHT;
  pthread_mutex_lock (&ctx->inflight_lock);
  if (add)
    ctx->inflight[slot] = out;
  else if (ctx->inflight[slot] == out)
    ctx->inflight[slot] = NULL;
  pthread_mutex_unlock (&ctx->inflight_lock);
}

static void
run_invoke (flint_ctx_t *ctx, const Flint__Worker__V1__Invoke *inv)
{
  flint_output_t out = { .ctx = ctx, .id = inv->request_id, .streaming = inv->streaming };
  flint_input_t in = {
    .data = inv->payload.data ? inv->payload.data : (const uint8_t *) "",
    .len = inv->payload.len,
    .request_id = inv->request_id,
    .streaming = inv->streaming,
    .deadline_ms = inv->deadline_ms,
  };
  int r;

  if (inv->deadline_ms)
    out.deadline_ns = flint_now_ns () + inv->deadline_ms * 1000000ull;
  if (ctx->nthreads > 0)
    inflight_set (ctx, &out, true);
  current_request = inv->request_id;
  r = ctx->fn.invoke (ctx, &in, &out);
  current_request = 0;
  if (ctx->nthreads > 0)
    inflight_set (ctx, &out, false);

  if (r != 0 && !out.failed)
    flint_fail (&out, FLINT_FN_UNKNOWN, "function returned %d", r);
  if (!out.failed && out.cancelled)
    flint_fail (&out, 1 /* CANCELLED */, "cancelled");
  if (out.failed)
    send_result (ctx, out.id, out.code, out.msg, NULL, 0);
  else
    send_result (ctx, out.id, 0, NULL, out.buf.data, out.buf.len);
  flint_buf_free (&out.buf);
  __atomic_add_fetch (&ctx->completed, 1, __ATOMIC_RELAXED);
}

static void *
executor_main (void *arg)
{
  flint_ctx_t *ctx = arg;

  for (;;)
    {
      job_t *job;
      pthread_mutex_lock (&ctx->qlock);
      while (ctx->qhead == NULL && !ctx->stopping)
        pthread_cond_wait (&ctx->qcond, &ctx->qlock);
      if (ctx->qhead == NULL)
        {
          pthread_mutex_unlock (&ctx->qlock);
          return NULL;
        }
      job = ctx->qhead;
      ctx->qhead = job->next;
      if (ctx->qhead == NULL)
        ctx->qtail = NULL;
      pthread_mutex_unlock (&ctx->qlock);
      run_invoke (ctx, job->frame->invoke);
      flint__worker__v1__frame__free_unpacked (job->frame, NULL);
      free (job);
    }
}

static int
start_executors (flint_ctx_t *ctx, size_t n)
{
  ctx->threads = calloc (n, sizeof *ctx->threads);
  if (ctx->threads == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < n; i++)
    {
      int r = pthread_create (&ctx->threads[i], NULL, executor_main, ctx);
      if (r != 0)
        return -r;
      ctx->nthreads++;
    }
  return 0;
}

static void
stop_executors (flint_ctx_t *ctx)
{
  pthread_mutex_lock (&ctx->qlock);
  ctx->stopping = true;
  pthread_cond_broadcast (&ctx->qcond);
  pthread_mutex_unlock (&ctx->qlock);
  for (size_t i = 0; i < ctx->nthreads; i++)
    pthread_join (ctx->threads[i], NULL);
  free (ctx->threads);
  ctx->threads = NULL;
  ctx->nthreads = 0;
}

static void
enqueue_invoke (flint_ctx_t *ctx, frame_t *f)
{
  job_t *job = calloc (1, sizeof *job);
  if (job == NULL)
    abort ();
  job->frame = f;
  pthread_mutex_lock (&ctx->qlock);
  if (ctx->qtail)
    ctx->qtail->next = job;
  else
    ctx->qhead = job;
  ctx->qtail = job;
  pthread_cond_signal (&ctx->qcond);
  pthread_mutex_unlock (&ctx->qlock);
}

static void
cancel_invoke (flint_ctx_t *ctx, uint64_t id)
{
  pthread_mutex_lock (&ctx->inflight_lock);
  flint_output_t *out = ctx->inflight[id % MAX_INFLIGHT];
  if (out && out->id == id)
    out->cancelled = 1;
  pthread_mutex_unlock (&ctx->inflight_lock);
}

/* ---- lifecycle frames ------------------------------------------------------------------ */

static char *
xstrdup (const char *s)
{
  char *r = strdup (s ? s : "");
  if (r == NULL)
    abort ();
  return r;
}

static int
handle_load (flint_ctx_t *ctx, const Flint__Worker__V1__Load *load)
{
  Flint__Worker__V1__Loaded loaded = FLINT__WORKER__V1__LOADED__INIT;
  frame_t f = FLINT__WORKER__V1__FRAME__INIT;
  flint_error_t err = FLINT_ERROR_INIT;
  uint64_t t0 = flint_now_ns ();
  int r = -1;

  ctx->endpoint = xstrdup (load->endpoint);
  ctx->version = load->version;
  snprintf (ctx->replica_id, sizeof ctx->replica_id, "%s", load->replica_id);
  ctx->max_payload = load->max_payload ? load->max_payload : 6u << 20;
  ctx->max_concurrency = load->max_concurrency ? load->max_concurrency : 1;
  ctx->cpu_millis = load->cpu_millis;
  ctx->path = xstrdup (load->path);
  ctx->draft_path = load->draft_path && load->draft_path[0] ? xstrdup (load->draft_path) : NULL;
  for (size_t i = 0; i < load->n_config && ctx->n_config < MAX_CONFIG; i++, ctx->n_config++)
    {
      ctx->config_keys[ctx->n_config] = xstrdup (load->config[i]->key);
      ctx->config_vals[ctx->n_config] = xstrdup (load->config[i]->value);
    }
  for (size_t i = 0; i < load->n_weights && ctx->n_weights < MAX_WEIGHTS; i++, ctx->n_weights++)
    {
      ctx->weights[ctx->n_weights].name = xstrdup (load->weights[i]->key);
      ctx->weights[ctx->n_weights].path = xstrdup (load->weights[i]->value);
    }

  switch (load->kind)
    {
    case FLINT__WORKER__V1__KIND__KIND_NATIVE:
      r = flint__load_native (ctx, load->path, &ctx->fn, &err);
      break;
    case FLINT__WORKER__V1__KIND__KIND_EXEC:
      r = flint__load_exec (ctx, load->path, load->args, load->n_args, &ctx->fn, &err);
      break;
    case FLINT__WORKER__V1__KIND__KIND_LLM:
      r = flint__load_llm (ctx, load->path, &ctx->fn, &err);
      break;
    default:
      r = flint_error_set (&err, FLINT_EINVAL, "unknown function kind %d", (int) load->kind);
      break;
    }
  if (r == 0 && ctx->fn.init)
    {
      flint__ctx_clear_error (ctx);
      if (ctx->fn.init (ctx) != 0)
        r = flint_error_set (&err, FLINT_EPRECONDITION, "init failed: %s",
                             ctx->error[0] ? ctx->error : "flint_init returned an error");
    }
  if (r == 0 && ctx->max_concurrency > 1)
    {
      int e = start_executors (ctx, ctx->max_concurrency);
      if (e < 0)
        r = flint_error_set_errno (&err, FLINT_EINTERNAL, e, "start %u executor threads", ctx->max_concurrency);
    }
  ctx->initialised = r == 0;
  loaded.ok = r == 0;
  loaded.error = r == 0 ? (char *) "" : err.msg;
  loaded.code = r == 0 ? 0 : (int) err.code;
  loaded.init_ms = (double) (flint_now_ns () - t0) / 1e6;
  f.msg_case = FLINT__WORKER__V1__FRAME__MSG_LOADED;
  f.loaded = &loaded;
  send_frame (ctx, &f);
  return r;
}

static void
handle_checkpoint (flint_ctx_t *ctx)
{
  Flint__Worker__V1__CheckpointReady ready = FLINT__WORKER__V1__CHECKPOINT_READY__INIT;
  frame_t f = FLINT__WORKER__V1__FRAME__INIT;
  uint64_t t0 = flint_now_ns ();

  ready.ok = 1;
  ready.error = (char *) "";
  flint__ctx_clear_error (ctx);
  if (ctx->fn.before_checkpoint && ctx->fn.before_checkpoint (ctx) != 0)
    {
      ready.ok = 0;
      ready.error = ctx->error[0] ? ctx->error : (char *) "flint_before_checkpoint returned an error";
    }
  ready.hook_ms = (double) (flint_now_ns () - t0) / 1e6;
  f.msg_case = FLINT__WORKER__V1__FRAME__MSG_CHECKPOINT_READY;
  f.checkpoint_ready = &ready;
  send_frame (ctx, &f);
}

static void
handle_restored (flint_ctx_t *ctx, const Flint__Worker__V1__Restored *rs)
{
  Flint__Worker__V1__RestoredAck ack = FLINT__WORKER__V1__RESTORED_ACK__INIT;
  frame_t f = FLINT__WORKER__V1__FRAME__INIT;
  uint64_t t0 = flint_now_ns ();
  unsigned seed = 0;
  const char *names[8];
  double values[8];
  Flint__Worker__V1__RestoredAck__PhasesMsEntry entries[8], *ptrs[8];
  size_t n;

  snprintf (ctx->replica_id, sizeof ctx->replica_id, "%s", rs->replica_id);
  /* Every replica restored from one image starts with the same libc RNG state: reseed it from
   * the fresh entropy flintd sent (the function's own RNGs are its after_restore hook's job). */
  if (rs->seed.len >= sizeof seed)
    memcpy (&seed, rs->seed.data, sizeof seed);
  else if (getrandom (&seed, sizeof seed, 0) < 0)
    seed = (unsigned) flint_now_ns ();
  srandom (seed);
  srand48 ((long) seed);
  srand (seed);

  ack.ok = 1;
  ack.error = (char *) "";
  flint__ctx_clear_error (ctx);
  if (ctx->fn.after_restore && ctx->fn.after_restore (ctx) != 0)
    {
      ack.ok = 0;
      ack.error = ctx->error[0] ? ctx->error : (char *) "flint_after_restore returned an error";
    }
  ack.hook_ms = (double) (flint_now_ns () - t0) / 1e6;
  if (ack.ok && ctx->fn.restore_phases)
    {
      uint64_t bytes = 0;
      n = ctx->fn.restore_phases (ctx, names, values, 8, &bytes);
      for (size_t i = 0; i < n; i++)
        {
          flint__worker__v1__restored_ack__phases_ms_entry__init (&entries[i]);
          entries[i].key = (char *) names[i];
          entries[i].value = values[i];
          ptrs[i] = &entries[i];
        }
      ack.n_phases_ms = n;
      ack.phases_ms = ptrs;
      ack.weight_bytes = bytes;
    }
  f.msg_case = FLINT__WORKER__V1__FRAME__MSG_RESTORED_ACK;
  f.restored_ack = &ack;
  send_frame (ctx, &f);
}

static void
handle_ping (flint_ctx_t *ctx, uint64_t seq)
{
  Flint__Worker__V1__Pong pong = FLINT__WORKER__V1__PONG__INIT;
  frame_t f = FLINT__WORKER__V1__FRAME__INIT;
  const char *names[64];
  double values[64];
  Flint__Worker__V1__Pong__StatsEntry entries[64];
  Flint__Worker__V1__Pong__StatsEntry *ptrs[64];
  size_t n = 0;

  pong.seq = seq;
  pong.completed = __atomic_load_n (&ctx->completed, __ATOMIC_RELAXED);
  if (ctx->fn.stats)
    n = ctx->fn.stats (ctx, names, values, 64);
  for (size_t i = 0; i < n; i++)
    {
      flint__worker__v1__pong__stats_entry__init (&entries[i]);
      entries[i].key = (char *) names[i];
      entries[i].value = values[i];
      ptrs[i] = &entries[i];
    }
  pong.n_stats = n;
  pong.stats = ptrs;
  f.msg_case = FLINT__WORKER__V1__FRAME__MSG_PONG;
  f.pong = &pong;
  send_frame (ctx, &f);
}

static void
ctx_free (flint_ctx_t *ctx)
{
  free (ctx->endpoint);
  free (ctx->draft_path);
  free (ctx->path);
  for (size_t i = 0; i < ctx->n_config; i++)
    {
      free (ctx->config_keys[i]);
      free (ctx->config_vals[i]);
    }
  for (size_t i = 0; i < ctx->n_weights; i++)
    {
      if (ctx->weights[i].addr && ctx->weights[i].len)
        munmap ((void *) ctx->weights[i].addr, ctx->weights[i].len);
      free (ctx->weights[i].name);
      free (ctx->weights[i].path);
    }
  for (job_t *j = ctx->qhead, *next; j; j = next)
    {
      next = j->next;
      flint__worker__v1__frame__free_unpacked (j->frame, NULL);
      free (j);
    }
  pthread_mutex_destroy (&ctx->wlock);
  pthread_mutex_destroy (&ctx->weights_lock);
  pthread_mutex_destroy (&ctx->inflight_lock);
  pthread_mutex_destroy (&ctx->qlock);
  pthread_cond_destroy (&ctx->qcond);
  free (ctx);
}

static void
sigchld_reap (int sig)
{
  int saved = errno;
  (void) sig;
  /* Reap orphans that were reparented to us (we are pid 1). Loaders that own a child (exec)
   * wait for it explicitly by pid and tolerate ECHILD after this handler took it. */
  while (waitpid (-1, NULL, WNOHANG | __WNOTHREAD) > 0)
    ;
  errno = saved;
}

static void
sigterm_exit (int sig)
{
  (void) sig;
  _exit (0);
}

/* As pid 1 we are immune to signals we send ourselves (the kernel protects a namespace's init),
 * so abort() would not kill us but limp on into a SIGSEGV. Turn it into the shell convention,
 * exit status 128 + signal, which the spawner reports as "killed by signal N". */
static void
self_signal_exit (int sig)
{
  _exit (128 + sig);
}

int
flint_worker_run (int chan)
{
  flint_ctx_t *ctx;
  flint_frame_reader_t rd;
  bool loaded = false;
  int status = 0;

  ctx = calloc (1, sizeof *ctx);
  if (ctx == NULL)
    return 70;
  ctx->chan = chan;
  pthread_mutex_init (&ctx->wlock, NULL);
  pthread_mutex_init (&ctx->weights_lock, NULL);
  pthread_mutex_init (&ctx->inflight_lock, NULL);
  pthread_mutex_init (&ctx->qlock, NULL);
  pthread_cond_init (&ctx->qcond, NULL);
  signal (SIGPIPE, SIG_IGN);
  if (getpid () == 1)
    {
      struct sigaction sa = { .sa_handler = sigchld_reap, .sa_flags = SA_RESTART | SA_NOCLDSTOP };
      sigaction (SIGCHLD, &sa, NULL);
      /* pid 1 ignores signals it has no handler for: make SIGTERM/SIGINT end the worker. */
      signal (SIGTERM, sigterm_exit);
      signal (SIGINT, sigterm_exit);
      signal (SIGABRT, self_signal_exit);
      signal (SIGQUIT, self_signal_exit);
      signal (SIGUSR1, self_signal_exit);
      signal (SIGUSR2, self_signal_exit);
    }

  {
    Flint__Worker__V1__Hello hello = FLINT__WORKER__V1__HELLO__INIT;
    frame_t f = FLINT__WORKER__V1__FRAME__INIT;
    hello.abi_version = FLINT_ABI_VERSION;
    hello.pid = (int32_t) getpid ();
    hello.worker_version = (char *) FLINT_VERSION;
    f.msg_case = FLINT__WORKER__V1__FRAME__MSG_HELLO;
    f.hello = &hello;
    if (send_frame (ctx, &f) < 0)
      return 1;
  }

  /* Frames are bounded by the payload limit plus protobuf overhead once Load told us the limit;
   * before that only small control frames are expected. */
  flint_frame_reader_init (&rd, 1u << 20);
  for (;;)
    {
      const uint8_t *payload;
      size_t len;
      int r;

      while ((r = flint_frame_reader_next (&rd, &payload, &len)) == 1)
        {
          frame_t *f = flint__worker__v1__frame__unpack (NULL, len, payload);
          if (f == NULL)
            {
              fprintf (stderr, "flint-worker: malformed frame from flintd (%zu bytes)\n", len);
              status = 2;
              goto out;
            }
          switch (f->msg_case)
            {
            case FLINT__WORKER__V1__FRAME__MSG_LOAD:
              if (loaded)
                break;
              loaded = true;
              if (handle_load (ctx, f->load) < 0)
                {
                  /* flintd has the reason in the Loaded frame; stay until it closes us so the
                   * reply is not raced by our exit. */
                  flint__worker__v1__frame__free_unpacked (f, NULL);
                  f = NULL;
                  ctx->fn.invoke = NULL;
                }
              rd.max = ctx->max_payload + (64u << 10);
              break;
            case FLINT__WORKER__V1__FRAME__MSG_INVOKE:
              if (ctx->fn.invoke == NULL)
                {
                  send_result (ctx, f->invoke->request_id, FLINT_FN_UNAVAILABLE, "function not loaded", NULL, 0);
                  break;
                }
              if (ctx->nthreads > 0)
                {
                  enqueue_invoke (ctx, f);
                  f = NULL; /* the executor owns it now */
                }
              else
                run_invoke (ctx, f->invoke);
              break;
            case FLINT__WORKER__V1__FRAME__MSG_CANCEL:
              cancel_invoke (ctx, f->cancel->request_id);
              break;
            case FLINT__WORKER__V1__FRAME__MSG_CHECKPOINT:
              handle_checkpoint (ctx);
              break;
            case FLINT__WORKER__V1__FRAME__MSG_RESTORED:
              handle_restored (ctx, f->restored);
              break;
            case FLINT__WORKER__V1__FRAME__MSG_PING:
              handle_ping (ctx, f->ping->seq);
              break;
            default:
              break;
            }
          if (f)
            flint__worker__v1__frame__free_unpacked (f, NULL);
        }
      if (r < 0)
        {
          fprintf (stderr, "flint-worker: oversized frame from flintd\n");
          status = 2;
          goto out;
        }

      uint8_t *space;
      size_t room;
      if (flint_frame_reader_space (&rd, 64u << 10, &space, &room) < 0)
        {
          status = 70;
          goto out;
        }
      /* Never sleep in read(2): a unix stream socket has one wait queue for both directions, so
       * a reader blocked in read is woken (for nothing) each time flintd consumes a frame we
       * wrote. poll(2) waits for POLLIN only, which saves a context switch per request. */
      ssize_t n = recv (chan, space, room, MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        {
          struct pollfd pfd = { .fd = chan, .events = POLLIN };
          if (poll (&pfd, 1, -1) < 0 && errno != EINTR)
            {
              status = 70;
              goto out;
            }
          continue;
        }
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break; /* flintd closed the channel: we are done */
      flint_frame_reader_commit (&rd, (size_t) n);
    }

out:
  if (ctx->nthreads)
    stop_executors (ctx);
  /* the channel closed (the replica was stopped): the function cleans up after a successful
   * init, and only then (a worker that is killed runs nothing) */
  if (ctx->initialised && ctx->fn.fini)
    ctx->fn.fini (ctx);
  if (ctx->fn.unload)
    ctx->fn.unload (ctx);
  flint_frame_reader_free (&rd);
  ctx_free (ctx);
  return status;
}
