"""The harness the tests, benchmarks and the demo share: a recall server in a child process."""
