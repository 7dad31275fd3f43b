"""studies/batch_limit.py at batch_size 1024."""

from studies.batch_limit import STUDIES

STUDY = STUDIES["1024"]
