/* Corpus replay for a fuzz target built without libFuzzer: runs LLVMFuzzerTestOneInput on every
 * file of the directories (or the files) given as arguments, so the default test suite (suite
 * `fuzz`) exercises each target's corpus with the sanitizers of the test build and no clang.
 * Exit status 0 when every input ran; a crash or sanitizer report fails the test. */
#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static int
run_file (const char *path)
{
  FILE *f = fopen (path, "rbe");
  uint8_t *buf;
  long n;

  if (f == NULL || fseek (f, 0, SEEK_END) < 0 || (n = ftell (f)) < 0 || fseek (f, 0, SEEK_SET) < 0)
    {
      perror (path);
      if (f)
        fclose (f);
      return -1;
    }
  /* an exact-size heap copy: ASan catches a read one byte past the input */
  buf = malloc ((size_t) n ? (size_t) n : 1);
  if (buf == NULL || fread (buf, 1, (size_t) n, f) != (size_t) n)
    {
      perror (path);
      free (buf);
      fclose (f);
      return -1;
    }
  fclose (f);
  LLVMFuzzerTestOneInput (buf, (size_t) n);
  free (buf);
  return 0;
}

int
main (int argc, char **argv)
{
  int files = 0;

  for (int i = 1; i < argc; i++)
    {
      struct stat st;
      DIR *dir;
      struct dirent *de;

      if (stat (argv[i], &st) < 0)
        {
          perror (argv[i]);
          return 1;
        }
      if (!S_ISDIR (st.st_mode))
        {
          if (run_file (argv[i]) < 0)
            return 1;
          files++;
          continue;
        }
      dir = opendir (argv[i]);
      if (dir == NULL)
        {
          perror (argv[i]);
          return 1;
        }
      while ((de = readdir (dir)) != NULL)
        {
          char path[4096];
          if (de->d_name[0] == '.')
            continue;
          snprintf (path, sizeof path, "%s/%s", argv[i], de->d_name);
          if (run_file (path) < 0)
            {
              closedir (dir);
              return 1;
            }
          files++;
        }
      closedir (dir);
    }
  if (files == 0)
    {
      fprintf (stderr, "replay: no corpus files given\n");
      return 1;
    }
  printf ("replayed %d input(s)\n", files);
  return 0;
}
