"""Suites (TOML) and speed benchmarks of the hot paths."""
