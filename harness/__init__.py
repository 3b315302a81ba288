"""The real-server harness shared by the tests and the benchmark."""
