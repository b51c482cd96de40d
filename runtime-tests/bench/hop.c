/* The exec floor of the benchmark: what three execs of static glibc programs cost with no
 * work in between. "hop exec PROG ARGS" becomes PROG; "hop fork PROG ARGS" runs PROG as a
 * child and waits for it. `hop exec hop fork ROOTFS/bin/true` is the shape of `capsa exec`
 * (the runtime, its sealed copy, the program) and of crun's. Built with gcc -static by
 * bench.py; -nostdlib with -DNOLIBC gives the same exit without libc's start-up. */
#ifdef NOLIBC
void _start(void) { __asm__ volatile("mov $60, %eax; xor %edi, %edi; syscall"); }
#else
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3)
        return argc == 1 ? 0 : 2;
    if (strcmp(argv[1], "exec") == 0) {
        execv(argv[2], argv + 2);
        return 127;
    }
    pid_t pid = fork();
    if (pid == 0) {
        execv(argv[2], argv + 2);
        _exit(127);
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) < 0)
        return 126;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
#endif
