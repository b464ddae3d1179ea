/* CRIU RPC client. See criu.h. */
#include "criu.h"
#include "flint/cleanup.h"
#include "flint/util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int
flint_criu_spawn (const char *criu_bin, const int *keep, size_t nkeep, flint_criu_prep_cb prep, void *prep_data,
                  flint_criu_t *out, flint_error_t *err)
{
  int sks[2];
  pid_t pid;

  if (socketpair (AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sks) < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "criu: socketpair");
  pid = fork ();
  if (pid < 0)
    {
      int e = errno;
      close (sks[0]), close (sks[1]);
      return flint_error_set_errno (err, FLINT_EINTERNAL, e, "criu: fork");
    }
  if (pid == 0)
    {
      char fdarg[16];
      sigset_t none;

      sigemptyset (&none);
      sigprocmask (SIG_SETMASK, &none, NULL);
      signal (SIGPIPE, SIG_DFL);
      if (prep && prep (prep_data) < 0)
        _exit (120);
      {
        /* criu's chatter on stdout ("Looks good.") is not ours to log; errors go to stderr */
        int null = open ("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null >= 0 && null != STDOUT_FILENO)
          dup2 (null, STDOUT_FILENO);
      }
      for (size_t i = 0; i < nkeep; i++)
        fcntl (keep[i], F_SETFD, 0);
      fcntl (sks[1], F_SETFD, 0);
      snprintf (fdarg, sizeof fdarg, "%d", sks[1]);
      execl (criu_bin, "criu", "swrk", fdarg, (char *) NULL);
      _exit (121);
    }
  close (sks[1]);
  out->pid = pid;
  out->sk = sks[0];
  return 0;
}

static int
send_req (int sk, CriuReq *req)
{
  size_t len = criu_req__get_packed_size (req);
  _cleanup_free_ uint8_t *buf = malloc (len ? len : 1);
  ssize_t n;

  if (buf == NULL)
    return -ENOMEM;
  criu_req__pack (req, buf);
  do
    n = send (sk, buf, len, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n == (ssize_t) len ? 0 : n < 0 ? -errno : -EIO;
}

int
flint_criu_call (flint_criu_t *c, CriuReq *req, CriuResp **resp_out, flint_error_t *err)
{
  static uint8_t buf[1 << 17];
  int r = send_req (c->sk, req);

  if (r < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, r, "criu: send the request (did criu swrk start?)");
  for (;;)
    {
      ssize_t n;
      CriuResp *resp;

      do
        n = recv (c->sk, buf, sizeof buf, 0);
      while (n < 0 && errno == EINTR);
      if (n <= 0)
        return flint_error_set_errno (err, FLINT_EINTERNAL, n == 0 ? ECONNRESET : errno,
                                      "criu: no response (criu swrk exited: is CRIU >= 4.1 installed?)");
      resp = criu_resp__unpack (NULL, (size_t) n, buf);
      if (resp == NULL)
        return flint_error_set (err, FLINT_EINTERNAL, "criu: malformed response");
      if (resp->type == CRIU_REQ_TYPE__NOTIFY)
        {
          CriuReq ack = CRIU_REQ__INIT;
          ack.type = CRIU_REQ_TYPE__NOTIFY;
          ack.has_notify_success = 1;
          ack.notify_success = 1;
          criu_resp__free_unpacked (resp, NULL);
          if ((r = send_req (c->sk, &ack)) < 0)
            return flint_error_set_errno (err, FLINT_EINTERNAL, r, "criu: answer a notification");
          continue;
        }
      *resp_out = resp;
      return 0;
    }
}

void
flint_criu_close (flint_criu_t *c, bool reaped_elsewhere)
{
  if (c->sk >= 0)
    close (c->sk);
  c->sk = -1;
  if (c->pid > 0 && !reaped_elsewhere)
    waitpid (c->pid, NULL, 0);
  c->pid = -1;
}

int
flint_criu_version (const char *criu_bin, char *out, size_t len, flint_error_t *err)
{
  flint_criu_t c = { -1, -1 };
  CriuReq req = CRIU_REQ__INIT;
  CriuResp *resp = NULL;
  int r;

  if (access (criu_bin, X_OK) < 0)
    return flint_error_set_errno (err, FLINT_EPRECONDITION, errno, "`%s`", criu_bin);
  if (flint_criu_spawn (criu_bin, NULL, 0, NULL, NULL, &c, err) < 0)
    return -1;
  req.type = CRIU_REQ_TYPE__VERSION;
  r = flint_criu_call (&c, &req, &resp, err);
  flint_criu_close (&c, false);
  if (r < 0)
    return -1;
  if (!resp->success || resp->version == NULL)
    {
      criu_resp__free_unpacked (resp, NULL);
      return flint_error_set (err, FLINT_EPRECONDITION, "criu refused the VERSION request");
    }
  snprintf (out, len, "%d.%d%s%d", resp->version->major_number, resp->version->minor_number,
            resp->version->has_sublevel ? "." : "", resp->version->has_sublevel ? resp->version->sublevel : 0);
  if (!resp->version->has_sublevel)
    out[strlen (out) - 1] = '\0';
  criu_resp__free_unpacked (resp, NULL);
  return 0;
}
