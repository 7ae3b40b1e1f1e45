// Package bench is the load test of `cloudstack-pd bench`: a load
// generator that plays Junos relays for many synthetic VMs (package
// synth) and checks every answer, its latency histogram, a reflector that
// answers as cheaply as possible (to measure the generator itself), the
// setup of a benchmark site (a store and, for Kea, a reservations file)
// with its start-up measurement, and the writer of docs/BENCHMARKS.md.
//
// NewCommand returns the `bench` subcommand tree; the cloudstack-pd
// binary adds it as it is, so that its flags and help stay those of the
// operator's tool.
package bench
