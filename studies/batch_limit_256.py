"""studies/batch_limit.py at batch_size 256."""

from studies.batch_limit import STUDIES

STUDY = STUDIES["256"]
