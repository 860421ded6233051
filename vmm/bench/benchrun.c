/* benchrun NAME GUEST_MIB MARKER -- CMD ARGS...
 * Starts CMD with its stdout on a pipe, and reports one line:
 *   BENCH NAME marker_ms=T exit=C overhead_kib=O rss_kib=R
 * T: time from just before fork to the first output line containing MARKER.
 * O: peak RSS of CMD outside mappings of at least GUEST_MIB (the guest RAM),
 *    sampled from /proc/PID/smaps every 10 ms; R: peak total RSS. */
#define _GNU_SOURCE
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sample(pid_t pid, unsigned long guest_bytes, long *peak_over, long *peak_rss) {
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/smaps", pid);
    FILE *f = fopen(path, "r");
    if (!f) return;
    unsigned long start, end, size = 0;
    long over = 0, total = 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2) {
            size = end - start;
        } else if (!strncmp(line, "Rss:", 4)) {
            long kb = atol(line + 4);
            total += kb;
            if (size < guest_bytes) over += kb;
        }
    }
    fclose(f);
    if (over > *peak_over) *peak_over = over;
    if (total > *peak_rss) *peak_rss = total;
}

int main(int argc, char **argv) {
    if (argc < 6 || strcmp(argv[4], "--")) {
        fprintf(stderr, "usage: benchrun NAME GUEST_MIB MARKER -- CMD...\n");
        return 2;
    }
    const char *name = argv[1], *marker = argv[3];
    unsigned long guest_bytes = strtoul(argv[2], 0, 10) << 20;
    int fds[2];
    if (pipe(fds)) { perror("pipe"); return 2; }
    double t0 = now_ms();
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execvp(argv[5], argv + 5);
        perror("exec");
        _exit(127);
    }
    close(fds[1]);
    double marker_ms = -1;
    long peak_over = 0, peak_rss = 0;
    char tail[4096 + 256] = "";
    for (;;) {
        struct pollfd p = { .fd = fds[0], .events = POLLIN };
        int r = poll(&p, 1, 10);
        sample(pid, guest_bytes, &peak_over, &peak_rss);
        if (r > 0) {
            char buf[4096];
            ssize_t n = read(fds[0], buf, sizeof buf - 1);
            if (n <= 0) break;
            buf[n] = 0;
            size_t keep = strlen(tail);
            if (keep > 200) { memmove(tail, tail + keep - 200, 201); keep = 200; }
            memcpy(tail + keep, buf, n + 1);
            if (marker_ms < 0 && strstr(tail, marker)) marker_ms = now_ms() - t0;
        }
    }
    int status = 0;
    waitpid(pid, &status, 0);
    printf("BENCH %s marker_ms=%.1f exit=%d overhead_kib=%ld rss_kib=%ld\n", name, marker_ms,
           WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), peak_over, peak_rss);
    fflush(stdout);
    return 0;
}
