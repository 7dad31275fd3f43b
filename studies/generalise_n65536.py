"""studies/generalise.py's world-size cell n65536."""

from studies.generalise import STUDIES

STUDY = STUDIES["n65536"]
