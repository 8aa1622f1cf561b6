/* rcs-fw-pty: the firmware core playing the STM32 behind a pseudo-terminal (firmware in the loop).
 *
 *   rcs-fw-pty --link PATH [--rate HZ] [--channels N] [--valves N] [--tx-buffer BYTES] [--device TEXT]
 *
 * The same rcs_wire.c/rcs_fw.c as on the board; this file is only the "board": a pty instead of USB
 * CDC (PATH is a symlink to /dev/pts/N, replaced atomically), the monotonic clock instead of TIM2,
 * synthetic ADC counts at the configured rate in blocks of 2 ms instead of DMA, a variable instead
 * of valve GPIOs, and a 1 ms tick instead of a timer interrupt. Everything runs in one thread, so
 * the critical sections are empty: contexts never preempt each other here.
 *
 * stdout (line-buffered) is the board's console: `ready <pty>` once the link exists, then
 * `valves 0x<mask> safe <0|1>` whenever the outputs or the SAFE state change. SIGTERM or SIGINT
 * stops it, removing the link; the last line is `stopped` with the core's counters.
 */
#define _GNU_SOURCE /* ppoll, openpty */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "rcs_fw.h"
#include "synthetic_adc.h"

#define MAX_CHANNELS 64u
#define BLOCK_MAX 4096u

static volatile sig_atomic_t stopping;
static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

typedef struct {
    int master;
    uint64_t start_us;
    uint16_t valves;
} board_t;

static uint64_t monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint32_t port_now_us(void *ctx)
{
    board_t *b = ctx;
    return (uint32_t)(monotonic_us() - b->start_us); /* a 32-bit 1 MHz timer, like TIM2 */
}

static size_t port_write(void *ctx, const uint8_t *data, size_t len)
{
    board_t *b = ctx;
    ssize_t n = write(b->master, data, len);
    return n > 0 ? (size_t)n : 0; /* EAGAIN: the pty is full (the host is not reading) */
}

static void port_set_valves(void *ctx, uint16_t mask) { ((board_t *)ctx)->valves = mask; }
static uint16_t port_read_valves(void *ctx) { return ((board_t *)ctx)->valves; }
static uint32_t port_enter(void *ctx)
{
    (void)ctx;
    return 0;
}
static void port_exit(void *ctx, uint32_t state)
{
    (void)ctx;
    (void)state;
}

static int make_link(const char *link, const char *device)
{
    char staging[4096];
    snprintf(staging, sizeof staging, "%s.%ld.tmp", link, (long)getpid());
    unlink(staging);
    if (symlink(device, staging) != 0 || rename(staging, link) != 0) {
        fprintf(stderr, "rcs-fw-pty: cannot create the link %s: %s\n", link, strerror(errno));
        return -1;
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: rcs-fw-pty --link PATH [--rate HZ] [--channels N] [--valves N] "
                    "[--tx-buffer BYTES] [--device TEXT]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *link = NULL, *device_text = "rcs-emulator rcs-fw-core (host pty)";
    unsigned long rate = 10000, channels = 17, valves = 9, tx_size = 128u * 1024u; /* ~370 ms */
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) {
            usage();
        }
        const char *value = argv[++i];
        if (strcmp(argv[i - 1], "--link") == 0) {
            link = value;
        } else if (strcmp(argv[i - 1], "--rate") == 0) {
            rate = strtoul(value, NULL, 10);
        } else if (strcmp(argv[i - 1], "--channels") == 0) {
            channels = strtoul(value, NULL, 10);
        } else if (strcmp(argv[i - 1], "--valves") == 0) {
            valves = strtoul(value, NULL, 10);
        } else if (strcmp(argv[i - 1], "--tx-buffer") == 0) {
            tx_size = strtoul(value, NULL, 10);
        } else if (strcmp(argv[i - 1], "--device") == 0) {
            device_text = value;
        } else {
            usage();
        }
    }
    if (!link || rate == 0 || rate > 1000000 || channels == 0 || channels > MAX_CHANNELS || valves == 0 ||
        valves > RCS_FW_MAX_VALVES || tx_size < 1024) {
        usage();
    }

    int master, slave;
    char device[256];
    if (openpty(&master, &slave, device, NULL, NULL) != 0) {
        perror("rcs-fw-pty: openpty");
        return 1;
    }
    struct termios raw;
    tcgetattr(slave, &raw);
    cfmakeraw(&raw);
    tcsetattr(slave, TCSANOW, &raw); /* the slave stays open: the mode outlives the host's closes */
    fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
    if (make_link(link, device) != 0) {
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);

    static board_t board;
    board.master = master;
    board.start_us = monotonic_us();
    board.valves = 0x1FF; /* whatever the GPIOs held: the core closes them at boot */
    const rcs_fw_port_t port = {
        .ctx = &board,
        .now_us = port_now_us,
        .write = port_write,
        .set_valves = port_set_valves,
        .read_valves = port_read_valves,
        .enter_critical = port_enter,
        .exit_critical = port_exit,
    };
    static rcs_fw_t fw;
    uint8_t *tx = malloc(tx_size); /* the board's static buffer; sized at run time here */
    if (!tx) {
        return 1;
    }
    rcs_fw_config_t cfg = rcs_fw_default_config((uint32_t)rate, (uint8_t)channels, (uint8_t)valves, device_text);
    if (!rcs_fw_init(&fw, &cfg, &port, tx, tx_size)) {
        fprintf(stderr, "rcs-fw-pty: --tx-buffer %lu holds fewer than 2 frames of %u samples\n", tx_size,
                (unsigned)cfg.max_frame_samples);
        unlink(link);
        return 2;
    }
    printf("ready %s\n", device);

    const uint64_t block = cfg.max_frame_samples; /* one DMA half-transfer: 2 ms of samples */
    static uint16_t samples[BLOCK_MAX * 4];
    uint64_t generated = 0, next_tick = board.start_us + 1000;
    uint16_t shown_valves = 0xFFFF;
    int shown_safe = -1;
    while (!stopping) {
        uint64_t now = monotonic_us();
        uint64_t due = (now - board.start_us) * rate / 1000000u;
        while (due - generated >= block) { /* the DMA callback, however late this loop woke */
            for (uint64_t s = 0; s < block; s++) {
                for (unsigned c = 0; c < channels; c++) {
                    samples[s * channels + c] = synthetic_adc_count(generated + s, c);
                }
            }
            rcs_fw_samples(&fw, samples, block);
            generated += block;
        }
        uint8_t rx[512];
        ssize_t n;
        while ((n = read(master, rx, sizeof rx)) > 0) { /* CDC_Receive_FS */
            rcs_fw_receive(&fw, rx, (size_t)n);
        }
        if (now >= next_tick) { /* the 1 kHz timer interrupt */
            rcs_fw_tick(&fw);
            next_tick += 1000;
            if (next_tick <= now) {
                next_tick = now + 1000;
            }
        }
        rcs_fw_pump(&fw); /* the main loop */

        uint16_t v = rcs_fw_valves(&fw);
        int safe = rcs_fw_safe(&fw);
        if (v != shown_valves || safe != shown_safe) {
            printf("valves 0x%04x safe %d\n", v, safe);
            shown_valves = v;
            shown_safe = safe;
        }

        uint64_t next_block = board.start_us + (generated + block) * 1000000u / rate;
        uint64_t wake = next_block < next_tick ? next_block : next_tick;
        now = monotonic_us();
        if (wake > now) {
            struct pollfd fds = {.fd = master, .events = POLLIN};
            if (rcs_fw_tx_pending(&fw) > 0) {
                fds.events |= POLLOUT;
            }
            uint64_t wait = wake - now;
            struct timespec timeout = {.tv_sec = (time_t)(wait / 1000000u), .tv_nsec = (long)(wait % 1000000u) * 1000};
            ppoll(&fds, 1, &timeout, NULL);
        }
    }

    char target[4096];
    ssize_t len = readlink(link, target, sizeof target - 1);
    if (len > 0) {
        target[len] = 0;
        if (strcmp(target, device) == 0) {
            unlink(link);
        }
    }
    rcs_fw_stats_t s = rcs_fw_stats(&fw);
    printf("stopped samples=%" PRIu64 " samples_dropped=%" PRIu64 " frames_queued=%" PRIu32
           " frames_dropped=%" PRIu32 " tx_high_water=%" PRIu32 " commands=%" PRIu32 " heartbeats=%" PRIu32
           " watchdog_trips=%" PRIu32 " rx_bad_frames=%" PRIu32 " rx_crc_errors=%" PRIu32 "\n",
           s.samples, s.samples_dropped, s.frames_queued, s.frames_dropped, s.tx_high_water, s.commands,
           s.heartbeats, s.watchdog_trips, s.rx_bad_frames, s.rx_crc_errors);
    free(tx);
    close(slave);
    close(master);
    return 0;
}
