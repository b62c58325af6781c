"""Shared pure helpers: YAML config with located errors, durations and instants, predicates on dotted
paths."""
