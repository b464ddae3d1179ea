/* Corpus replay for the fuzz targets in builds without libFuzzer (the default suite `fuzz`):
 * runs LLVMFuzzerTestOneInput on every file of the directories (or files) given. A crash or a
 * sanitizer report fails the test; the target's own checks abort on wrong answers. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static size_t runs;

static int
run_file (const char *path)
{
  FILE *f = fopen (path, "rb");
  uint8_t *buf;
  long n;

  if (f == NULL || fseek (f, 0, SEEK_END) < 0 || (n = ftell (f)) < 0 || fseek (f, 0, SEEK_SET) < 0)
    {
      perror (path);
      if (f)
        fclose (f);
      return -1;
    }
  buf = malloc ((size_t) n + 1);
  if (buf == NULL || fread (buf, 1, (size_t) n, f) != (size_t) n)
    {
      perror (path);
      fclose (f);
      free (buf);
      return -1;
    }
  fclose (f);
  LLVMFuzzerTestOneInput (buf, (size_t) n);
  free (buf);
  runs++;
  return 0;
}

static int
run_path (const char *path)
{
  struct stat st;
  DIR *d;
  struct dirent *de;
  int rc = 0;

  if (stat (path, &st) < 0)
    {
      perror (path);
      return -1;
    }
  if (!S_ISDIR (st.st_mode))
    return run_file (path);
  d = opendir (path);
  if (d == NULL)
    {
      perror (path);
      return -1;
    }
  while ((de = readdir (d)) != NULL && rc == 0)
    {
      char sub[4096];
      if (de->d_name[0] == '.')
        continue;
      snprintf (sub, sizeof sub, "%s/%s", path, de->d_name);
      rc = run_path (sub);
    }
  closedir (d);
  return rc;
}

int
main (int argc, char **argv)
{
  for (int i = 1; i < argc; i++)
    if (run_path (argv[i]) < 0)
      return 1;
  printf ("replayed %zu inputs\n", runs);
  return runs ? 0 : 1;
}
