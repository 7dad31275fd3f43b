"""studies/generalise.py's world-size cell n32768."""

from studies.generalise import STUDIES

STUDY = STUDIES["n32768"]
