#!/usr/bin/env python3
"""Send reservation commands with confluent-kafka (librdkafka) and wait for their results.

Sends a stock.set and then a reserve for one SKU to the commands topic and prints, for each,
one JSON line {"command": ..., "partition": ..., "offset": ..., "result": ...}. Exit status:
0 when every result is accepted, 1 when one is rejected, 3 when a result does not come in time.

    python3 reserve.py --bootstrap 127.0.0.1:9092 --sku SKU-1 --on-hand 10 --quantity 2

What a client of the processor must get right, and where this file does it:

* Partitioner (produce): the processor owns a SKU on the partition Kafka's Java client picks,
  murmur2 of the key. librdkafka's default is consistent_random (CRC32), which picks other
  partitions; set partitioner=murmur2_random (for non-empty keys the same as murmur2). A command
  on the wrong partition is still decided, but only after the processor forwards it, and its
  result lands on the SKU's partition, not on the one this program reads.
* Isolation (consume): results are written in Kafka transactions. Read them with
  isolation.level=read_committed, or you may see results of transactions that are aborted later.
* Waiting by command id: the result of a command lands on the same partition number of the
  results topic as the command on the commands topic. Note that partition's end offset before
  sending, read only that partition from there, and match the command_id.

Needs python3-confluent-kafka (Debian) or `pip install confluent-kafka`.
"""

import argparse
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", default="127.0.0.1:9092", help="bootstrap servers (host:port,...)")
    p.add_argument("--commands-topic", default="reservations.commands")
    p.add_argument("--results-topic", default="reservations.results")
    p.add_argument("--sku", default="SKU-1")
    p.add_argument("--on-hand", type=int, default=10, help="stock.set on_hand")
    p.add_argument("--quantity", type=int, default=2, help="reserve quantity")
    p.add_argument("--reservation", default="", help="reservation id (default: random)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each result")
    return p.parse_args()


def new_producer(bootstrap):
    return Producer({
        "bootstrap.servers": bootstrap,
        # Java-compatible key -> partition mapping. NOT librdkafka's default (consistent_random).
        "partitioner": "murmur2_random",
        "enable.idempotence": True,  # acks=all, no duplicates from internal retries
        "linger.ms": 0,
    })


def new_consumer(bootstrap):
    return Consumer({
        "bootstrap.servers": bootstrap,
        # Only results of committed transactions.
        "isolation.level": "read_committed",
        # assign() needs no group, but the client wants a group.id; nothing is committed to it.
        "group.id": "reservations-example-" + uuid.uuid4().hex,
        "enable.auto.commit": False,
        "enable.partition.eof": False,
    })


def end_offsets(consumer, topic, timeout):
    """The high watermark of every partition of topic: a result produced later lands at or past it."""
    md = consumer.list_topics(topic, timeout=timeout)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        raise KafkaException(t.error if t is not None else "topic %s not found" % topic)
    ends = {}
    for p in t.partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
        ends[p] = high
    return ends


def send(producer, topic, command, timeout):
    """Produce command keyed by its SKU; return (partition, offset) from the delivery report."""
    report = {}

    def on_delivery(err, msg):
        report["err"], report["msg"] = err, msg

    producer.produce(topic, key=command["sku"].encode(), value=json.dumps(command).encode(),
                     on_delivery=on_delivery)
    producer.flush(timeout)
    if "msg" not in report:
        raise KafkaException("no delivery report within %.0f s" % timeout)
    if report["err"] is not None:
        raise KafkaException(report["err"])
    return report["msg"].partition(), report["msg"].offset()


def await_result(consumer, topic, partition, start, command_id, timeout):
    """Read topic's partition from offset start until the result of command_id; None on timeout."""
    consumer.assign([TopicPartition(topic, partition, start)])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error() is not None:
            raise KafkaException(msg.error())
        # The command_id header saves decoding other commands' results.
        headers = dict(msg.headers() or [])
        if headers.get("command_id", b"").decode() != command_id:
            continue
        result = json.loads(msg.value())
        if result.get("command_id") == command_id:
            return result
    return None


def main():
    args = parse_args()
    run = uuid.uuid4().hex[:12]
    reservation = args.reservation or "r-" + run
    commands = [
        {"command_id": "py-set-" + run, "type": "stock.set", "sku": args.sku, "on_hand": args.on_hand},
        {"command_id": "py-reserve-" + run, "type": "reserve", "sku": args.sku,
         "reservation_id": reservation, "quantity": args.quantity, "cart_id": "cart-py"},
    ]
    producer = new_producer(args.bootstrap)
    consumer = new_consumer(args.bootstrap)
    status = 0
    try:
        for command in commands:
            # Results partitions' end offsets BEFORE the send: the result comes after them.
            ends = end_offsets(consumer, args.results_topic, args.timeout)
            partition, offset = send(producer, args.commands_topic, command, args.timeout)
            result = await_result(consumer, args.results_topic, partition, ends[partition],
                                  command["command_id"], args.timeout)
            print(json.dumps({"command": command, "partition": partition, "offset": offset, "result": result}),
                  flush=True)
            if result is None:
                print("no result for %s within %.0f s" % (command["command_id"], args.timeout), file=sys.stderr)
                return 3
            if result["outcome"] != "accepted":
                status = 1
    finally:
        consumer.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
