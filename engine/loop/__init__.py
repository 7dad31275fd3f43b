"""The traced loop: one inner step as a list of mechanism stages, start / advance / measure
over a batch of runs, and the exact diagnostics of one record."""
