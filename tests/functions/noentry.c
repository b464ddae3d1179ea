/* A shared object that is not a flint function: it exports no flint_invoke. */
int not_a_flint_function (void);
int
not_a_flint_function (void)
{
  return 42;
}
