"""Studies: plain dicts, one module each, named STUDY. `coevo run NAME` finds them here."""
