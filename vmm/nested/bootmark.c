/* Writes one byte to the VMM's boot marker port (0x440): the guest-side "booted"
 * timestamp. Static, so it runs from a bare busybox initramfs. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/io.h>

int main(int argc, char **argv) {
    int value = argc > 1 ? atoi(argv[1]) : 1;
    if (ioperm(0x440, 1, 1) != 0) {
        perror("bootmark: ioperm(0x440)");
        return 1;
    }
    outb((unsigned char)value, 0x440);
    return 0;
}
