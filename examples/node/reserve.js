#!/usr/bin/env node
// Send reservation commands with kafkajs and wait for their results.
//
// Sends a stock.set and then a reserve for one SKU to the commands topic and prints, for each, one
// JSON line {"command": ..., "partition": ..., "offset": ..., "result": ...}. Exit status: 0 when
// every result is accepted, 1 when one is rejected, 3 when a result does not come in time.
//
//     npm ci && node reserve.js --bootstrap 127.0.0.1:9092 --sku SKU-1 --on-hand 10 --quantity 2
//
// What a client of the processor must get right, and where this file does it:
//
// * Partitioner (produce): the processor owns a SKU on the partition Kafka's Java client picks,
//   murmur2 of the key. kafkajs 2's Partitioners.DefaultPartitioner is that one; the
//   LegacyPartitioner (kafkajs 1's default) is not Java-compatible and picks other partitions.
//   Name the partitioner explicitly. A command on the wrong partition is still decided, but only
//   after the processor forwards it, and its result lands on the SKU's partition, not on the one
//   this program reads.
// * Compression (consume): the processor writes uncompressed records, but a topic's
//   compression.type or another producer may bring snappy batches, which kafkajs cannot decode
//   by itself: register a snappy codec (kafkajs-snappy, below) or the consumer crashes on such a
//   batch ("Snappy compression not implemented").
// * Isolation (consume): results are written in Kafka transactions. Read them committed only
//   (readUncommitted: false), or you may see results of transactions that are aborted later.
// * Waiting by command id: the result of a command lands on the same partition number of the
//   results topic as the command on the commands topic. Note that partition's end offset before
//   sending, read only that partition from there, and match the command_id. kafkajs consumes
//   through a consumer group only, so this program joins a group of its own (never committing
//   offsets), pauses every results partition but the command's, and seeks that one.

'use strict';

const crypto = require('node:crypto');
const { parseArgs } = require('node:util');
const { CompressionCodecs, CompressionTypes, Kafka, Partitioners, logLevel } = require('kafkajs');
const SnappyCodec = require('kafkajs-snappy');

// Snappy batches (a topic's compression.type, other producers) need a codec in kafkajs.
CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec;

function options() {
  const { values } = parseArgs({
    options: {
      bootstrap: { type: 'string', default: '127.0.0.1:9092' },
      'commands-topic': { type: 'string', default: 'reservations.commands' },
      'results-topic': { type: 'string', default: 'reservations.results' },
      sku: { type: 'string', default: 'SKU-1' },
      'on-hand': { type: 'string', default: '10' },
      quantity: { type: 'string', default: '2' },
      reservation: { type: 'string', default: '' },
      timeout: { type: 'string', default: '30' },
    },
  });
  return {
    brokers: values.bootstrap.split(','),
    commandsTopic: values['commands-topic'],
    resultsTopic: values['results-topic'],
    sku: values.sku,
    onHand: parseInt(values['on-hand'], 10),
    quantity: parseInt(values.quantity, 10),
    reservation: values.reservation,
    timeoutMs: parseFloat(values.timeout) * 1000,
  };
}

// ResultWaiter reads the results topic and hands each result to the one waiting for its command_id.
class ResultWaiter {
  constructor(kafka, topic) {
    this.topic = topic;
    this.waiting = new Map(); // command_id -> {partition, resolve, reject}
    this.crashed = null;
    this.consumer = kafka.consumer({
      groupId: 'reservations-example-' + crypto.randomUUID(),
      readUncommitted: false, // read_committed: only results of committed transactions
    });
  }

  async start(timeoutMs) {
    const joined = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('consumer did not join its group in time')), timeoutMs);
      this.consumer.on(this.consumer.events.GROUP_JOIN, () => { clearTimeout(timer); resolve(); });
    });
    // A consumer that crashes (a non-retriable error) stops reading: fail the waits at once.
    this.consumer.on(this.consumer.events.CRASH, ({ payload }) => {
      if (payload.restart) return;
      this.crashed = payload.error;
      for (const w of this.waiting.values()) w.reject(payload.error);
      this.waiting.clear();
    });
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: this.topic, fromBeginning: false });
    await this.consumer.run({
      autoCommit: false, // the group is this program's own; it never commits
      eachMessage: async ({ partition, message }) => this.onMessage(partition, message),
    });
    await joined;
  }

  onMessage(partition, message) {
    // The command_id header saves decoding other commands' results.
    const id = message.headers && message.headers.command_id ? message.headers.command_id.toString() : '';
    const w = this.waiting.get(id);
    if (!w || w.partition !== partition) return;
    const result = JSON.parse(message.value.toString());
    if (result.command_id !== id) return;
    this.waiting.delete(id);
    w.resolve(result);
  }

  // await returns the result of commandId, read from partition starting at offset, or null after timeoutMs.
  async await(commandId, partition, offset, partitions, timeoutMs) {
    if (this.crashed) throw this.crashed;
    const found = new Promise((resolve, reject) => this.waiting.set(commandId, { partition, resolve, reject }));
    this.consumer.pause([{ topic: this.topic, partitions: partitions.filter((p) => p !== partition) }]);
    this.consumer.resume([{ topic: this.topic, partitions: [partition] }]);
    this.consumer.seek({ topic: this.topic, partition, offset: String(offset) });
    let timer;
    const timeout = new Promise((resolve) => { timer = setTimeout(() => resolve(null), timeoutMs); });
    try {
      return await Promise.race([found, timeout]);
    } finally {
      clearTimeout(timer);
      this.waiting.delete(commandId);
    }
  }

  async stop() {
    await this.consumer.disconnect();
  }
}

async function main() {
  const opts = options();
  const kafka = new Kafka({ clientId: 'reservations-example-node', brokers: opts.brokers, logLevel: logLevel.WARN });
  const producer = kafka.producer({
    // Java-compatible murmur2 key -> partition mapping. Say so explicitly: kafkajs 1 defaulted to
    // the LegacyPartitioner, which is not.
    createPartitioner: Partitioners.DefaultPartitioner,
    idempotent: true, // acks=all, no duplicates from internal retries
    maxInFlightRequests: 1,
  });
  const admin = kafka.admin();
  const waiter = new ResultWaiter(kafka, opts.resultsTopic);

  const run = crypto.randomBytes(6).toString('hex');
  const reservation = opts.reservation || 'r-' + run;
  const commands = [
    { command_id: 'js-set-' + run, type: 'stock.set', sku: opts.sku, on_hand: opts.onHand },
    {
      command_id: 'js-reserve-' + run, type: 'reserve', sku: opts.sku,
      reservation_id: reservation, quantity: opts.quantity, cart_id: 'cart-js',
    },
  ];

  let status = 0;
  await Promise.all([producer.connect(), admin.connect()]);
  try {
    await waiter.start(opts.timeoutMs);
    for (const command of commands) {
      // Results partitions' end offsets BEFORE the send: the result comes after them.
      const ends = await admin.fetchTopicOffsets(opts.resultsTopic);
      const [meta] = await producer.send({
        topic: opts.commandsTopic,
        acks: -1,
        messages: [{ key: command.sku, value: JSON.stringify(command) }],
      });
      const partition = meta.partition;
      const end = ends.find((e) => e.partition === partition);
      const result = await waiter.await(command.command_id, partition, end.high,
        ends.map((e) => e.partition), opts.timeoutMs);
      console.log(JSON.stringify({ command, partition, offset: Number(meta.baseOffset), result }));
      if (result === null) {
        console.error(`no result for ${command.command_id} within ${opts.timeoutMs / 1000} s`);
        return 3;
      }
      if (result.outcome !== 'accepted') status = 1;
    }
  } finally {
    await Promise.allSettled([waiter.stop(), producer.disconnect(), admin.disconnect()]);
  }
  return status;
}

main().then((code) => { process.exitCode = code; }, (err) => {
  console.error(err);
  process.exitCode = 2;
});
