"""Runners: where datasets, methods, metrics and tracking meet (the only such place)."""
