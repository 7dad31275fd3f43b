"""The reference baseline alone: self-rewarding co-evolution, 5 seeds."""

STUDY = {
    "name": "headline",
    "description": "Reference baseline (REFERENCE.md defaults), seeds 0-4.",
    "seeds": [0, 1, 2, 3, 4],
    "base": {},
    "conditions": {"baseline": {}},
}
