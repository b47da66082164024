"""Benchmarks that prove tidepool's numbers: registry capacity and failure detection."""
