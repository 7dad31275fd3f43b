"""studies/generalise.py's world-size cell n256."""

from studies.generalise import STUDIES

STUDY = STUDIES["n256"]
