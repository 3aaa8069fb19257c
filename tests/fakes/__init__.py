"""Loopback fakes of the remote APIs, shared by tests, benchmarks and process-level scenarios."""
