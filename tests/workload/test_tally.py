"""soak.workload.tally: what Triton's model statistics must count, per way of counting
an error response (the version's: soak.triton.facts.error_response_count)."""

import pytest

from soak.triton.facts import error_response_count
from soak.workload.tally import expected_statistics


def test_on_2_51_error_responses_are_successes():
    how = error_response_count("2.51.0")
    assert how == "success"
    assert expected_statistics(30, 20, how) == (50, 0, 50)


def test_on_2_43_error_responses_are_failures():
    how = error_response_count("2.43.0")
    assert how == "failure"
    assert expected_statistics(30, 20, how) == (30, 20, 50)


def test_a_version_not_seen_accepts_either_count_but_not_fewer_in_all():
    for version in ("2.47.0", None, "unknown"):
        assert error_response_count(version) == "either"
    least_ok, least_failed, total = expected_statistics(30, 20, "either")
    assert (least_ok, least_failed, total) == (30, 0, 50)
    for success, failed in ((50, 0), (30, 20)):  # 2.51's count, 2.43's count
        assert success >= least_ok and failed >= least_failed and success + failed >= total
    assert 30 + 10 < total  # ten responses not counted at all still fail


def test_versions_around_the_known_ones():
    assert error_response_count("2.40.0") == "failure"
    assert error_response_count("2.52.1") == "success"
    assert error_response_count("3.0.0") == "success"


def test_an_unknown_way_of_counting_is_refused():
    with pytest.raises(ValueError, match="not 'maybe'"):
        expected_statistics(1, 1, "maybe")
