"""Turn a results Dataset (condition, seed, iteration) into figures and tables.

Every summary is over seeds, diverged runs are left out everywhere and counted.
"""

from analysis.claims import Claim, claims_markdown, evaluate_claims, write_claims
from analysis.data import diverged_note, mask_diverged, n_diverged
from analysis.figures import comparison, headline, perception_gap, small_multiples
from analysis.report import write_all
from analysis.stats import Summary, paired_difference, sd_ratio, seed_summary, t_band
from analysis.tables import condition_table, write_csv, write_markdown

__all__ = [
    "Claim",
    "Summary",
    "claims_markdown",
    "comparison",
    "condition_table",
    "diverged_note",
    "evaluate_claims",
    "headline",
    "mask_diverged",
    "n_diverged",
    "paired_difference",
    "perception_gap",
    "sd_ratio",
    "seed_summary",
    "small_multiples",
    "t_band",
    "write_all",
    "write_claims",
    "write_csv",
    "write_markdown",
]
