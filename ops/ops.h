/* ops: operating transfuse: the embedded Kafka broker for one machine,
 * metrics, live throughput, cluster launch. Nothing depends on ops except
 * the binaries. */
#ifndef TRANSFUSE_OPS_H
#define TRANSFUSE_OPS_H

#include "core.h"

/* `transfuse broker`: librdkafka's mock Kafka cluster as a standalone local
 * process (--brokers N, --topic NAME:PARTITIONS, --bootstrap-file FILE).
 * Prints the bootstrap address and runs until SIGINT/SIGTERM. Returns the
 * process status (0 stopped cleanly, 1 failed, 2 usage). */
int broker_main(int argc, char **argv);

#endif
