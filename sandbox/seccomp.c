/* The seccomp policy of flint workers: an allowlist, default deny (EPERM).
 *
 * Sized for what flint runs: native C functions (glibc, dlopen, threads), interpreters reached
 * through `kind: exec` (python3 and the like: fork/exec, pipes, epoll), and the model engine
 * (threads, mmap, and on GPUs the NVIDIA driver's ioctls). Everything that changes the kernel's
 * view of the world beyond the sandbox is refused: mount and friends, namespaces (clone with
 * CLONE_NEW*, unshare, setns), ptrace and process_vm_*, bpf, perf_event_open, keyctl,
 * userfaultfd, module loading, kexec, reboot, swap, clock setting, io_uring, raw
 * file-handle opening. Non-native syscall ABIs (i386, x32) kill the process.
 *
 * Two policies: `standard` allows a short list of ioctl requests (terminal queries, FIONREAD,
 * FIONBIO, FIOCLEX); `gpu` allows every ioctl (the NVIDIA driver speaks through them), and is
 * used only for manifests that ask for a GPU. Each is compiled once per spawner into a classic
 * BPF program and loaded with a single prctl in each sandbox: no libseccomp work per spawn. */
#include "sandbox_internal.h"
#include "flint/cleanup.h"

#include <errno.h>
#include <linux/filter.h>
#include <sched.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

static const char *const allowed[] = {
  /* files and I/O */
  "read", "write", "open", "openat", "close", "close_range", "creat", "stat", "fstat", "lstat", "newfstatat",
  "statx", "statfs", "fstatfs", "lseek", "pread64", "pwrite64", "readv", "writev", "preadv", "pwritev", "preadv2",
  "pwritev2", "access", "faccessat", "faccessat2", "dup", "dup2", "dup3", "pipe", "pipe2", "fcntl", "flock",
  "fsync", "fdatasync", "sync_file_range", "truncate", "ftruncate", "fallocate", "fadvise64", "readahead",
  "getdents", "getdents64", "getcwd", "chdir", "fchdir", "rename", "renameat", "renameat2", "mkdir", "mkdirat",
  "rmdir", "link", "linkat", "unlink", "unlinkat", "symlink", "symlinkat", "readlink", "readlinkat", "chmod",
  "fchmod", "fchmodat", "chown", "fchown", "lchown", "fchownat", "umask", "utime", "utimes", "utimensat",
  "futimesat", "sendfile", "copy_file_range", "splice", "tee", "vmsplice", "getxattr", "lgetxattr", "fgetxattr",
  "listxattr", "llistxattr", "flistxattr", "inotify_init", "inotify_init1", "inotify_add_watch",
  "inotify_rm_watch", "memfd_create", "name_to_handle_at",
  /* memory */
  "mmap", "munmap", "mprotect", "mremap", "msync", "mincore", "madvise", "brk", "mlock", "mlock2", "munlock",
  "mlockall", "munlockall", "mbind", "set_mempolicy", "get_mempolicy", "move_pages", "membarrier",
  "pkey_alloc", "pkey_free", "pkey_mprotect", "shmget", "shmat", "shmdt", "shmctl",
  /* processes and threads (clone is checked below; clone3 refused with ENOSYS) */
  "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid", "kill", "tgkill", "tkill",
  "getpid", "getppid", "gettid", "getpgid", "getpgrp", "setpgid", "getsid", "setsid", "getuid", "geteuid",
  "getgid", "getegid", "getresuid", "getresgid", "getgroups", "capget", "set_tid_address", "set_robust_list",
  "get_robust_list", "rseq", "arch_prctl", "prctl", "sched_yield", "sched_getaffinity", "sched_setaffinity",
  "sched_getparam", "sched_setparam", "sched_getscheduler", "sched_get_priority_max",
  "sched_get_priority_min", "sched_rr_get_interval", "sched_getattr", "getpriority", "setpriority",
  "getrlimit", "setrlimit", "prlimit64", "getrusage", "times", "uname", "sysinfo", "getcpu", "personality",
  "pidfd_open", "pidfd_send_signal", "restart_syscall",
  /* signals and time */
  "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigtimedwait", "rt_sigqueueinfo",
  "rt_tgsigqueueinfo", "rt_sigsuspend", "sigaltstack", "pause", "alarm", "nanosleep", "clock_nanosleep",
  "clock_gettime", "clock_getres", "gettimeofday", "time", "getitimer", "setitimer", "timer_create",
  "timer_settime", "timer_gettime", "timer_getoverrun", "timer_delete", "timerfd_create", "timerfd_settime",
  "timerfd_gettime", "signalfd", "signalfd4", "eventfd", "eventfd2",
  /* waiting and synchronisation */
  "futex", "futex_waitv", "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl",
  "epoll_wait", "epoll_pwait", "epoll_pwait2", "semget", "semop", "semtimedop", "semctl", "msgget", "msgsnd",
  "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
  "io_setup", "io_destroy", "io_getevents", "io_submit", "io_cancel", "io_pgetevents",
  /* sockets (socket itself is checked below) */
  "connect", "accept", "accept4", "bind", "listen", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg",
  "recvmmsg", "shutdown", "getsockname", "getpeername", "socketpair", "setsockopt", "getsockopt",
  /* randomness */
  "getrandom",
};

/* ioctl requests every program may make under the standard policy. */
static const unsigned long standard_ioctls[] = {
  TCGETS, TIOCGWINSZ, TIOCGPGRP, FIONREAD, FIONBIO, FIOCLEX, FIONCLEX, FIOASYNC,
};

static int
add_rule (scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned n, const struct scmp_arg_cmp *cmp)
{
  int nr = seccomp_syscall_resolve_name (name);
  if (nr == __NR_SCMP_ERROR)
    return 0; /* not a syscall on this architecture */
  return seccomp_rule_add_array (ctx, action, nr, n, cmp);
}

/* Compiles one policy into `prog` (heap BPF, owned by the caller). */
static int
compile (bool gpu, struct sock_fprog *prog, flint_error_t *err)
{
  scmp_filter_ctx ctx = seccomp_init (SCMP_ACT_ERRNO (EPERM));
  const uint64_t ns_flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
                            | CLONE_NEWNET | CLONE_NEWCGROUP;
  static const int families[] = { AF_UNIX, AF_INET, AF_INET6, AF_NETLINK };
  _cleanup_close_ int fd = -1;
  off_t size;
  int r = 0;

  if (ctx == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "seccomp_init failed");
  /* a process that reaches for another ABI is up to no good */
  seccomp_attr_set (ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
  for (size_t i = 0; i < sizeof allowed / sizeof allowed[0] && r == 0; i++)
    r = add_rule (ctx, SCMP_ACT_ALLOW, allowed[i], 0, NULL);
  if (r == 0)
    {
      /* threads and plain forks, never new namespaces */
      struct scmp_arg_cmp c = SCMP_A0 (SCMP_CMP_MASKED_EQ, ns_flags, 0);
      r = add_rule (ctx, SCMP_ACT_ALLOW, "clone", 1, &c);
    }
  if (r == 0)
    /* clone3 passes its flags in memory a filter cannot read: make libc fall back to clone */
    r = add_rule (ctx, SCMP_ACT_ERRNO (ENOSYS), "clone3", 0, NULL);
  for (size_t i = 0; i < sizeof families / sizeof families[0] && r == 0; i++)
    {
      struct scmp_arg_cmp c = SCMP_A0 (SCMP_CMP_EQ, (uint64_t) families[i]);
      r = add_rule (ctx, SCMP_ACT_ALLOW, "socket", 1, &c);
    }
  if (r == 0 && gpu)
    r = add_rule (ctx, SCMP_ACT_ALLOW, "ioctl", 0, NULL);
  for (size_t i = 0; !gpu && i < sizeof standard_ioctls / sizeof standard_ioctls[0] && r == 0; i++)
    {
      struct scmp_arg_cmp c = SCMP_A1 (SCMP_CMP_EQ, (uint64_t) standard_ioctls[i]);
      r = add_rule (ctx, SCMP_ACT_ALLOW, "ioctl", 1, &c);
    }
  if (r < 0)
    {
      seccomp_release (ctx);
      return flint_error_set_errno (err, FLINT_EINTERNAL, r, "seccomp: add rule");
    }
  fd = memfd_create ("flint-seccomp", MFD_CLOEXEC);
  if (fd < 0 || seccomp_export_bpf (ctx, fd) < 0 || (size = lseek (fd, 0, SEEK_END)) <= 0)
    {
      seccomp_release (ctx);
      return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "seccomp: export the filter");
    }
  seccomp_release (ctx);
  prog->len = (unsigned short) ((size_t) size / sizeof (struct sock_filter));
  prog->filter = malloc ((size_t) size);
  if (prog->filter == NULL || pread (fd, prog->filter, (size_t) size, 0) != size)
    {
      free (prog->filter);
      prog->filter = NULL;
      return flint_error_set (err, FLINT_EINTERNAL, "seccomp: read the exported filter");
    }
  return 0;
}

int
flint__seccomp_compile (flint_sandbox_node_t *node, flint_error_t *err)
{
  if (compile (false, &node->seccomp_standard, err) < 0)
    return flint_error_prefix (err, "standard policy");
  if (compile (true, &node->seccomp_gpu, err) < 0)
    return flint_error_prefix (err, "gpu policy");
  return 0;
}
