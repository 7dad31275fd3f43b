"""studies/batch_limit.py at gradient_estimator exact."""

from studies.batch_limit import STUDIES

STUDY = STUDIES["exact"]
