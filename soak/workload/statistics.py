"""What Triton's model statistics must count after the requests soak saw answered: the
expectation only, pure, so that each Triton version's way of counting is stated and tested."""

from __future__ import annotations


def expected_statistics(ok: int, errors: int, error_responses: str) -> tuple[int, int, int]:
    """(least successes, least failures, least of both together) for `ok` right answers and
    `errors` error responses, counted as `error_responses` says: 'failure', 'success' or
    'either' (soak.triton.facts.error_response_count of the server's version)."""
    if error_responses == "success":
        return ok + errors, 0, ok + errors
    if error_responses == "either":
        return ok, 0, ok + errors
    if error_responses == "failure":
        return ok, errors, ok + errors
    raise ValueError(
        f"error_responses is 'failure', 'success' or 'either', not {error_responses!r}"
    )
