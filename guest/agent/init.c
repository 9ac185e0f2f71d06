/*
 * cordon-init: PID 1 inside the guest.
 *
 *   cordon-init [--agent PATH] [--hostname NAME] [-- AGENT_ARGS...]
 *
 * Mounts /proc, /sys, /dev (devtmpfs), /dev/pts, /dev/shm, /run and /tmp, sets
 * the hostname, brings up the loopback interface (the egress listener lives on
 * 127.0.0.1), reaps every orphan, runs cordon-agent and restarts it with
 * backoff when it dies. Powers the VM off on SIGTERM/SIGPWR or when the agent
 * exits with status 64 (its `shutdown` op); reboots on SIGINT or status 65.
 * Defaults can also come from the kernel command line as CORDON_AGENT=... and
 * CORDON_HOSTNAME=... (the kernel hands unknown key=value pairs to init).
 */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_AGENT "/usr/sbin/cordon-agent"
#define DEFAULT_HOSTNAME "cordon"
#define EXIT_POWEROFF 64
#define EXIT_REBOOT 65
#define MAX_AGENT_ARGS 32

static bool no_reboot; /* CORDON_INIT_NO_REBOOT=1: exit instead (smoke tests in a PID namespace) */

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  dprintf(2, "cordon-init: %s\n", line);
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A directory on another device than its parent is already a mount point.
 * Only /dev is checked: the kernel mounts it itself with CONFIG_DEVTMPFS_MOUNT. */
static bool is_mountpoint(const char *dst) {
  char parent[64];
  struct stat a, b;
  snprintf(parent, sizeof parent, "%s/..", dst);
  return stat(dst, &a) == 0 && stat(parent, &b) == 0 && a.st_dev != b.st_dev;
}

static void mount_fs(const char *src, const char *dst, const char *type, unsigned long flags, const char *opts) {
  if (mkdir(dst, 0755) < 0 && errno != EEXIST) say("mkdir %s failed: %s", dst, strerror(errno));
  if (strcmp(dst, "/dev") == 0 && is_mountpoint(dst)) return;
  if (mount(src, dst, type, flags, opts) < 0) say("mount %s failed: %s", dst, strerror(errno));
}

static void loopback_up(void) {
  struct ifreq ifr;
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  memset(&ifr, 0, sizeof ifr);
  strcpy(ifr.ifr_name, "lo");
  if (ioctl(fd, SIOCGIFFLAGS, &ifr) == 0) {
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0) say("cannot bring up %s", "lo");
  }
  close(fd);
}

static void setup(const char *hostname) {
  umask(022);
  mount_fs("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  mount_fs("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  mount_fs("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
  mount_fs("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666");
  mount_fs("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  mount_fs("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
  mount_fs("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  if (mkdir("/run/cordon", 0750) < 0 && errno != EEXIST) say("mkdir %s failed", "/run/cordon");
  symlink("/proc/self/fd", "/dev/fd");
  symlink("/proc/self/fd/0", "/dev/stdin");
  symlink("/proc/self/fd/1", "/dev/stdout");
  symlink("/proc/self/fd/2", "/dev/stderr");
  if (sethostname(hostname, strlen(hostname)) < 0) say("sethostname %s failed", hostname);
  loopback_up();
  setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
}

static void reap_for(uint64_t ms) {
  uint64_t end = now_ms() + ms;
  while (now_ms() < end) {
    pid_t p = waitpid(-1, NULL, WNOHANG);
    if (p < 0 && errno == ECHILD) return;
    if (p <= 0) usleep(20000);
  }
}

static void shutdown_now(bool reboot_after) {
  say("%s", reboot_after ? "rebooting" : "powering off");
  kill(-1, SIGTERM);
  reap_for(2000);
  kill(-1, SIGKILL);
  reap_for(500);
  sync();
  if (no_reboot) _exit(0); /* before the remount: in a test namespace "/" is the host's */
  mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL);
  reboot(reboot_after ? RB_AUTOBOOT : RB_POWER_OFF);
  /* No ACPI power-off: a reset ends QEMU when it runs with -no-reboot. */
  reboot(RB_AUTOBOOT);
  for (;;) pause();
}

static pid_t start_agent(char **argv, const sigset_t *mask) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  sigprocmask(SIG_UNBLOCK, mask, NULL);
  setsid();
  execv(argv[0], argv);
  say("cannot run %s", argv[0]);
  _exit(127);
}

int main(int argc, char **argv) {
  const char *agent = getenv("CORDON_AGENT") ? getenv("CORDON_AGENT") : DEFAULT_AGENT;
  const char *hostname = getenv("CORDON_HOSTNAME") ? getenv("CORDON_HOSTNAME") : DEFAULT_HOSTNAME;
  char *agent_argv[MAX_AGENT_ARGS + 2];
  int n = 1;
  no_reboot = getenv("CORDON_INIT_NO_REBOOT") != NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--agent") == 0 && i + 1 < argc) agent = argv[++i];
    else if (strcmp(argv[i], "--hostname") == 0 && i + 1 < argc) hostname = argv[++i];
    else if (strcmp(argv[i], "--") == 0) {
      while (++i < argc && n <= MAX_AGENT_ARGS) agent_argv[n++] = argv[i];
    } else say("ignoring argument %s", argv[i]);
  }
  agent_argv[0] = (char *)agent;
  agent_argv[n] = NULL;
  if (getpid() != 1) {
    say("%s", "must run as PID 1");
    return 2;
  }

  sigset_t mask;
  sigemptyset(&mask);
  int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGPWR};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaddset(&mask, sigs[i]);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  reboot(RB_DISABLE_CAD); /* ctrl-alt-del becomes SIGINT */
  setup(hostname);

  pid_t agent_pid = start_agent(agent_argv, &mask);
  uint64_t started = now_ms(), restart_at = 0, backoff = 100;
  for (;;) {
    struct timespec ts = {1, 0};
    if (agent_pid <= 0) {
      uint64_t now = now_ms();
      if (now >= restart_at) {
        agent_pid = start_agent(agent_argv, &mask);
        started = now;
        continue;
      }
      ts.tv_sec = (time_t)((restart_at - now) / 1000);
      ts.tv_nsec = (long)((restart_at - now) % 1000) * 1000000L;
    }
    siginfo_t si;
    int sig = sigtimedwait(&mask, &si, &ts);
    if (sig == SIGTERM || sig == SIGPWR || sig == SIGUSR2) shutdown_now(false);
    if (sig == SIGINT) shutdown_now(true);
    if (sig != SIGCHLD) continue;
    int status;
    pid_t p;
    while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
      if (p != agent_pid) continue; /* an orphan: reaped, nothing else to do */
      agent_pid = 0;
      if (WIFEXITED(status) && WEXITSTATUS(status) == EXIT_POWEROFF) shutdown_now(false);
      if (WIFEXITED(status) && WEXITSTATUS(status) == EXIT_REBOOT) shutdown_now(true);
      backoff = now_ms() - started > 10000 ? 100 : (backoff * 2 > 5000 ? 5000 : backoff * 2);
      restart_at = now_ms() + backoff;
      say("%s exited; restarting it", agent);
    }
  }
}
