/* ops: operating transfuse: the embedded Kafka broker for one machine,
 * metrics, live throughput, cluster launch. Nothing depends on ops except
 * the binaries. */
#ifndef TRANSFUSE_OPS_H
#define TRANSFUSE_OPS_H

#include "core.h"

#endif
