/* Chat templates. See chat.h. */
#include "chat.h"

#include <string.h>

static const char *const names[] = { "none", "chatml", "llama3", "mistral", "llama2" };

const char *
flint__chat_name (flint_chat_t kind)
{
  return (size_t) kind < sizeof names / sizeof names[0] ? names[kind] : "?";
}

static bool
has (const flint_tokenizer_t *t, const char *tok)
{
  return flint_tokenizer_find (t, tok) >= 0;
}

static const char *
missing (flint_chat_t kind, const flint_tokenizer_t *t)
{
  static const char *const chatml[] = { "<|im_start|>", "<|im_end|>", NULL };
  static const char *const llama3[] = { "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                                        NULL };
  static const char *const inst[] = { "<s>", "</s>", NULL };
  const char *const *need = kind == FLINT_CHAT_CHATML ? chatml : kind == FLINT_CHAT_LLAMA3 ? llama3 : inst;
  if (kind == FLINT_CHAT_NONE)
    return NULL;
  for (; *need; need++)
    if (!has (t, *need))
      return *need;
  return NULL;
}

int
flint__chat_choose (const char *name, const flint_tokenizer_t *t, bool is_mistral, flint_chat_t *out,
                    flint_error_t *err)
{
  flint_chat_t kind = FLINT_CHAT_NONE;
  const char *miss;

  if (name && name[0])
    {
      bool found = false;
      for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp (name, names[i]) == 0)
          {
            kind = (flint_chat_t) i;
            found = true;
          }
      if (!found)
        return flint_error_set (err, FLINT_EPRECONDITION,
                                "config `chat_template`: unknown template `%.40s` (chatml, llama3, mistral, llama2, none)",
                                name);
      miss = missing (kind, t);
      if (miss)
        return flint_error_set (err, FLINT_EPRECONDITION,
                                "config `chat_template`: template `%s` needs the token `%s`, which `tokenizer.json` "
                                "does not have", name, miss);
      *out = kind;
      return 0;
    }
  if (has (t, "<|im_start|>") && !missing (FLINT_CHAT_CHATML, t))
    kind = FLINT_CHAT_CHATML;
  else if (has (t, "<|start_header_id|>") && !missing (FLINT_CHAT_LLAMA3, t))
    kind = FLINT_CHAT_LLAMA3;
  else if ((is_mistral || has (t, "[INST]")) && !missing (FLINT_CHAT_MISTRAL, t))
    kind = FLINT_CHAT_MISTRAL;
  *out = kind;
  return 0;
}

int32_t
flint__chat_end_token (flint_chat_t kind, const flint_tokenizer_t *t)
{
  switch (kind)
    {
    case FLINT_CHAT_CHATML: return flint_tokenizer_find (t, "<|im_end|>");
    case FLINT_CHAT_LLAMA3: return flint_tokenizer_find (t, "<|eot_id|>");
    case FLINT_CHAT_MISTRAL:
    case FLINT_CHAT_LLAMA2: return flint_tokenizer_find (t, "</s>");
    default: return -1;
    }
}

static bool
is (const flint_chat_msg_t *m, const char *role)
{
  return m->role_len == strlen (role) && memcmp (m->role, role, m->role_len) == 0;
}

/* Content with surrounding whitespace removed (Llama 3's template trims). */
static void
put_trimmed (flint_buf_t *out, const char *s, size_t n)
{
  while (n && (s[0] == ' ' || s[0] == '\n' || s[0] == '\t' || s[0] == '\r'))
    s++, n--;
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t' || s[n - 1] == '\r'))
    n--;
  flint_buf_append (out, s, n);
}

/* The [INST] templates: optional system first, then user/assistant turns starting with user,
 * ending with user. */
static int
render_inst (bool llama2, const flint_chat_msg_t *m, size_t n, flint_buf_t *out, flint_error_t *err)
{
  const flint_chat_msg_t *sys = NULL;
  size_t i = 0, turn = 0;

  if (n && is (&m[0], "system"))
    sys = &m[i++];
  if (i == n)
    return flint_error_set (err, FLINT_EINVAL, "field `messages`: needs at least one `user` message");
  for (; i < n; i++, turn++)
    {
      const char *want = turn % 2 == 0 ? "user" : "assistant";
      if (!is (&m[i], want))
        return flint_error_set (err, FLINT_EINVAL,
                                "field `messages[%zu].role`: expected `%s` (this model's chat template alternates "
                                "user and assistant after an optional system message)", i, want);
      if (turn % 2 == 0)
        {
          if (llama2 || turn == 0)
            flint_buf_puts (out, "<s>");
          flint_buf_puts (out, "[INST] ");
          if (sys && turn == 0)
            {
              if (llama2)
                flint_buf_puts (out, "<<SYS>>\n");
              flint_buf_append (out, sys->content, sys->content_len);
              flint_buf_puts (out, llama2 ? "\n<</SYS>>\n\n" : "\n\n");
            }
          flint_buf_append (out, m[i].content, m[i].content_len);
          flint_buf_puts (out, " [/INST]");
        }
      else
        {
          if (llama2)
            flint_buf_putc (out, ' ');
          flint_buf_append (out, m[i].content, m[i].content_len);
          flint_buf_puts (out, llama2 ? " </s>" : "</s>");
        }
    }
  if (turn % 2 == 0)
    return flint_error_set (err, FLINT_EINVAL, "field `messages`: the last message must be from the `user`");
  return 0;
}

static int
check_role (const flint_chat_msg_t *m, size_t i, flint_error_t *err)
{
  if (m->role_len == 0 || m->role_len > 32)
    return flint_error_set (err, FLINT_EINVAL, "field `messages[%zu].role`: must be 1 to 32 characters", i);
  for (size_t k = 0; k < m->role_len; k++)
    {
      char c = m->role[k];
      if (!((c >= 'a' && c <= 'z') || c == '_' || (c >= '0' && c <= '9')))
        return flint_error_set (err, FLINT_EINVAL,
                                "field `messages[%zu].role`: `%.*s` is not a role (lower-case letters, digits, _)", i,
                                (int) m->role_len, m->role);
    }
  return 0;
}

int
flint__chat_render (flint_chat_t kind, const flint_chat_msg_t *m, size_t n, flint_buf_t *out, flint_error_t *err)
{
  if (n == 0)
    return flint_error_set (err, FLINT_EINVAL, "field `messages`: empty");
  for (size_t i = 0; i < n; i++)
    if (check_role (&m[i], i, err) < 0)
      return -1;
  switch (kind)
    {
    case FLINT_CHAT_CHATML:
      for (size_t i = 0; i < n; i++)
        {
          flint_buf_puts (out, "<|im_start|>");
          flint_buf_append (out, m[i].role, m[i].role_len);
          flint_buf_putc (out, '\n');
          flint_buf_append (out, m[i].content, m[i].content_len);
          flint_buf_puts (out, "<|im_end|>\n");
        }
      flint_buf_puts (out, "<|im_start|>assistant\n");
      return 0;
    case FLINT_CHAT_LLAMA3:
      flint_buf_puts (out, "<|begin_of_text|>");
      for (size_t i = 0; i < n; i++)
        {
          flint_buf_puts (out, "<|start_header_id|>");
          flint_buf_append (out, m[i].role, m[i].role_len);
          flint_buf_puts (out, "<|end_header_id|>\n\n");
          put_trimmed (out, m[i].content, m[i].content_len);
          flint_buf_puts (out, "<|eot_id|>");
        }
      flint_buf_puts (out, "<|start_header_id|>assistant<|end_header_id|>\n\n");
      return 0;
    case FLINT_CHAT_MISTRAL:
      return render_inst (false, m, n, out, err);
    case FLINT_CHAT_LLAMA2:
      return render_inst (true, m, n, out, err);
    default:
      return flint_error_set (err, FLINT_EINVAL,
                              "field `messages`: this model has no chat template (send `prompt`, or set `config: "
                              "chat_template:` in flint.yaml)");
    }
}
