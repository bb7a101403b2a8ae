"""pytest plugin (registered through the `pytest11` entry point): latency tracking for your own
models with pytest-benchmark. Filled in by the performance work; harmless when unused."""
