"""What every benchmark prints: a median with its spread over repeats."""
import statistics


def summary(values, digits: int = 1) -> str:
    """``median X (min A, max B)`` of repeated measurements."""
    return (f"median {statistics.median(values):.{digits}f} "
            f"(min {min(values):.{digits}f}, max {max(values):.{digits}f})")
