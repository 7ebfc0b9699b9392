#include "granary_shim.h"
#include <sys/prctl.h>

int granary_set_parent_death_signal(int signal) {
    return prctl(PR_SET_PDEATHSIG, (unsigned long)signal, 0, 0, 0);
}

#include <stdio.h>
void granary_line_buffer_stdout(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
}
