"""studies/batch_limit.py at batch_size 16."""

from studies.batch_limit import STUDIES

STUDY = STUDIES["16"]
