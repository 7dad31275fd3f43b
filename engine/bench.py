"""`coevo bench`: compile and run seconds, throughput and achieved FLOP/s (filled in later)."""


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def main(args) -> int:
    raise NotImplementedError("coevo bench is not written yet")
