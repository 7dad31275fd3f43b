"""Traced foundations every mechanism shares: the world, the models, exact sums over all N
outputs, Adam with per-run rates and the run's keys, and the state a run carries."""
