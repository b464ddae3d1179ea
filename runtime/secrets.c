/* Secrets: named sets of KEY=VALUE pairs, stored root-only under STATE/secrets/ (directory
 * 0700, files 0600, JSON objects), injected as environment variables only into workers whose
 * manifest lists them. Values never appear in logs, in `flint status` or in any reply: only
 * names and keys do. */
#include "api.h"
#include "flint/buf.h"
#include "flint/cleanup.h"
#include "flint/json.h"
#include "flint/log.h"
#include "flint/util.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECRET_VALUE_MAX (64u << 10)
#define SECRET_KEYS_MAX 256

static bool
key_valid (const char *k)
{
  size_t n = strlen (k);
  if (n == 0 || n > 128 || (k[0] >= '0' && k[0] <= '9'))
    return false;
  for (size_t i = 0; i < n; i++)
    if (!((k[i] >= 'A' && k[i] <= 'Z') || (k[i] >= 'a' && k[i] <= 'z') || (k[i] >= '0' && k[i] <= '9') || k[i] == '_'))
      return false;
  return true;
}

static void
secret_path (flint_daemon_t *d, const char *name, char *buf, size_t len)
{
  snprintf (buf, len, "%s/secrets/%s.json", d->cfg.state_dir, name);
}

static int
secret_read (flint_daemon_t *d, const char *name, flint_json_doc_t **doc_out, int64_t *mtime_ms, flint_error_t *err)
{
  char path[PATH_MAX], jerr[200];
  _cleanup_free_ char *text = NULL;
  size_t len;
  struct stat st;
  int r;

  secret_path (d, name, path, sizeof path);
  r = flint_read_file (path, 16u << 20, &text, &len);
  if (r == -ENOENT)
    return flint_error_set (err, FLINT_ENOTFOUND, "secret `%s` not found (create it with `flint secret set %s KEY=VALUE`)",
                            name, name);
  if (r < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, r, "secret `%s`", name);
  if (flint_json_parse (text, len, doc_out, jerr, sizeof jerr) < 0
      || flint_json_root (*doc_out)->type != FLINT_JSON_OBJECT)
    return flint_error_set (err, FLINT_EINTERNAL, "secret `%s`: the stored file is corrupted", name);
  if (mtime_ms && stat (path, &st) == 0)
    *mtime_ms = (int64_t) st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
  return 0;
}

int
flint__secrets_env (flint_daemon_t *d, const flint_manifest_t *m, char ***env, size_t *n, flint_error_t *err)
{
  for (size_t i = 0; i < m->n_secrets; i++)
    {
      flint_json_doc_t *doc = NULL;
      const flint_json_t *root;

      if (secret_read (d, m->secrets[i], &doc, NULL, err) < 0)
        return -1;
      root = flint_json_root (doc);
      for (size_t k = 0; k < root->len; k++)
        {
          const flint_json_t *v = root->items[k];
          char *entry;
          if (v->type != FLINT_JSON_STRING)
            continue;
          if (asprintf (&entry, "%s=%s", root->keys[k], v->str) < 0)
            abort ();
          *env = realloc (*env, (*n + 2) * sizeof **env);
          if (*env == NULL)
            abort ();
          (*env)[(*n)++] = entry;
          (*env)[*n] = NULL;
        }
      flint_json_doc_free (doc);
    }
  return 0;
}

/* ---- RPCs -------------------------------------------------------------------------------- */

static void
finish_msg (flint_rpc_t *rpc, const ProtobufCMessage *msg)
{
  size_t len = protobuf_c_message_get_packed_size (msg);
  uint8_t *buf = malloc (len ? len : 1);
  if (buf == NULL)
    abort ();
  protobuf_c_message_pack (msg, buf);
  flint_rpc_finish (rpc, 0, NULL, buf, len);
  free (buf);
}

void
flint__secret_set_rpc (flint_rpc_t *rpc, void *daemon)
{
  flint_daemon_t *d = daemon;
  size_t len;
  const uint8_t *buf = flint_rpc_request (rpc, &len);
  Flint__V1__SetSecretRequest *in = flint__v1__set_secret_request__unpack (NULL, len, buf);
  Flint__V1__SecretInfo info = FLINT__V1__SECRET_INFO__INIT;
  flint_buf_t out = FLINT_BUF_INIT;
  char path[PATH_MAX], dir[PATH_MAX], msg[300];
  char **keys = NULL;
  int r;

  if (in == NULL)
    {
      flint_rpc_finish (rpc, FLINT_EINVAL, "malformed request message", NULL, 0);
      return;
    }
  if (!flint_name_valid (in->name))
    {
      snprintf (msg, sizeof msg, "`%.64s` is not a valid secret name (1-63 of a-z, 0-9 and '-')", in->name);
      flint_rpc_finish (rpc, FLINT_EINVAL, msg, NULL, 0);
      goto out;
    }
  if (in->n_values == 0 || in->n_values > SECRET_KEYS_MAX)
    {
      flint_rpc_finish (rpc, FLINT_EINVAL, "a secret needs 1 to 256 KEY=VALUE pairs", NULL, 0);
      goto out;
    }
  flint_buf_putc (&out, '{');
  keys = calloc (in->n_values, sizeof *keys);
  for (size_t i = 0; i < in->n_values; i++)
    {
      const char *k = in->values[i]->key, *v = in->values[i]->value;
      if (!key_valid (k))
        {
          snprintf (msg, sizeof msg, "secret `%s`: `%.64s` is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)",
                    in->name, k);
          flint_rpc_finish (rpc, FLINT_EINVAL, msg, NULL, 0);
          goto out;
        }
      if (strlen (v) > SECRET_VALUE_MAX)
        {
          snprintf (msg, sizeof msg, "secret `%s`: the value of `%s` is larger than 64 KiB", in->name, k);
          flint_rpc_finish (rpc, FLINT_EINVAL, msg, NULL, 0);
          goto out;
        }
      if (i)
        flint_buf_putc (&out, ',');
      flint_buf_json_string (&out, k, strlen (k));
      flint_buf_putc (&out, ':');
      flint_buf_json_string (&out, v, strlen (v));
      keys[i] = in->values[i]->key;
    }
  flint_buf_putc (&out, '}');
  snprintf (dir, sizeof dir, "%s/secrets", d->cfg.state_dir);
  flint_mkdir_p (dir, 0700);
  chmod (dir, 0700);
  secret_path (d, in->name, path, sizeof path);
  r = flint_write_file_atomic (path, out.data, out.len, 0600);
  /* the value must not linger in our heap longer than needed */
  explicit_bzero (out.data, out.len);
  if (r < 0)
    {
      snprintf (msg, sizeof msg, "store secret `%s`: %s", in->name, strerror (-r));
      flint_rpc_finish (rpc, FLINT_EINTERNAL, msg, NULL, 0);
      goto out;
    }
  flint_info ("secret `%s` set (%zu keys)", in->name, in->n_values);
  info.name = in->name;
  info.n_keys = in->n_values;
  info.keys = keys;
  info.updated_ms = flint_wall_ms ();
  finish_msg (rpc, &info.base);
out:
  free (keys);
  flint_buf_free (&out);
  flint__v1__set_secret_request__free_unpacked (in, NULL);
}

void
flint__secret_list_rpc (flint_rpc_t *rpc, void *daemon)
{
  flint_daemon_t *d = daemon;
  Flint__V1__ListSecretsResponse resp = FLINT__V1__LIST_SECRETS_RESPONSE__INIT;
  char dir[PATH_MAX];
  DIR *dd;
  struct dirent *de;

  snprintf (dir, sizeof dir, "%s/secrets", d->cfg.state_dir);
  dd = opendir (dir);
  while (dd && (de = readdir (dd)) != NULL)
    {
      char name[256];
      size_t l = strlen (de->d_name);
      flint_json_doc_t *doc = NULL;
      flint_error_t err = FLINT_ERROR_INIT;
      Flint__V1__SecretInfo *si;
      const flint_json_t *root;

      if (l < 6 || strcmp (de->d_name + l - 5, ".json") != 0 || l - 5 >= sizeof name)
        continue;
      memcpy (name, de->d_name, l - 5);
      name[l - 5] = '\0';
      si = calloc (1, sizeof *si);
      flint__v1__secret_info__init (si);
      si->name = strdup (name);
      if (secret_read (d, name, &doc, &si->updated_ms, &err) == 0)
        {
          root = flint_json_root (doc);
          si->keys = calloc (root->len + 1, sizeof *si->keys);
          for (size_t k = 0; k < root->len; k++)
            si->keys[si->n_keys++] = strdup (root->keys[k]);
          flint_json_doc_free (doc);
        }
      resp.secrets = realloc (resp.secrets, (resp.n_secrets + 1) * sizeof *resp.secrets);
      resp.secrets[resp.n_secrets++] = si;
    }
  if (dd)
    closedir (dd);
  finish_msg (rpc, &resp.base);
  for (size_t i = 0; i < resp.n_secrets; i++)
    flint__v1__secret_info__free_unpacked (resp.secrets[i], NULL);
  free (resp.secrets);
}

void
flint__secret_delete_rpc (flint_rpc_t *rpc, void *daemon)
{
  flint_daemon_t *d = daemon;
  size_t len;
  const uint8_t *buf = flint_rpc_request (rpc, &len);
  Flint__V1__DeleteSecretRequest *in = flint__v1__delete_secret_request__unpack (NULL, len, buf);
  Flint__V1__DeleteSecretResponse resp = FLINT__V1__DELETE_SECRET_RESPONSE__INIT;
  char path[PATH_MAX], msg[300];

  if (in == NULL)
    {
      flint_rpc_finish (rpc, FLINT_EINVAL, "malformed request message", NULL, 0);
      return;
    }
  if (!flint_name_valid (in->name))
    {
      snprintf (msg, sizeof msg, "`%.64s` is not a valid secret name", in->name);
      flint_rpc_finish (rpc, FLINT_EINVAL, msg, NULL, 0);
    }
  else
    {
      secret_path (d, in->name, path, sizeof path);
      if (unlink (path) < 0)
        {
          snprintf (msg, sizeof msg, errno == ENOENT ? "secret `%s` not found" : "delete secret `%s`", in->name);
          flint_rpc_finish (rpc, errno == ENOENT ? FLINT_ENOTFOUND : FLINT_EINTERNAL, msg, NULL, 0);
        }
      else
        {
          flint_info ("secret `%s` deleted", in->name);
          finish_msg (rpc, &resp.base);
        }
    }
  flint__v1__delete_secret_request__free_unpacked (in, NULL);
}
