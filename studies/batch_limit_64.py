"""studies/batch_limit.py at batch_size 64."""

from studies.batch_limit import STUDIES

STUDY = STUDIES["64"]
