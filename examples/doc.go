// Package examples holds callers of the pipeline written in other languages:
// python/ (confluent-kafka, librdkafka) and node/ (kafkajs). Each sends a
// stock.set and a reserve keyed by SKU with Kafka's murmur2 partitioner and
// awaits each result by command_id on the results topic, read_committed.
//
// The tests of this package run them against an in-process kfake broker and
// processor and check their results: the Python one in `make test`, the Node
// one (build tag examples_node, after `npm ci` in node/) in `make examples`.
// docs/EXAMPLES.md is the manual.
package examples
