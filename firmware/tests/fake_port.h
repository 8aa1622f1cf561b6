/* A port for running the core on a host: a settable clock, valve outputs as a variable, and the
 * bytes the device writes collected in a buffer. Used by the unit tests and the ctypes library. */
#ifndef RCS_FAKE_PORT_H
#define RCS_FAKE_PORT_H

#include "rcs_fw.h"

#define FAKE_OUT_CAP (1u << 20)

typedef struct {
    uint32_t now_us;
    uint16_t valves;
    uint32_t set_valves_calls;
    bool link_busy;    /* write takes nothing */
    size_t write_max;  /* per write; 0 = take everything offered */
    long budget;       /* bytes taken in all before the link is busy; -1 = no limit */
    int critical_depth;
    uint8_t out[FAKE_OUT_CAP];
    size_t out_len;
    rcs_fw_port_t port;
} fake_port_t;

void fake_port_init(fake_port_t *fake);

#endif
