"""Nearest-neighbour search shared by probes and the generator probe."""
