from itertools import islice

from soak.workload.polling import CAP_S, FIRST_S, pauses


def test_pauses_double_from_the_first_up_to_the_cap():
    assert list(islice(pauses(0.005, 0.05), 6)) == [0.005, 0.01, 0.02, 0.04, 0.05, 0.05]


def test_default_pauses_see_a_quick_change_quickly_and_poll_a_long_wait_rarely():
    first = list(islice(pauses(), 40))
    assert first[0] == FIRST_S
    assert max(first) == CAP_S
    # A 1.3 s unload (the python backend's stub exit) is watched with a few dozen polls.
    elapsed, polls = 0.0, 0
    for pause in pauses():
        if elapsed >= 1.3:
            break
        elapsed, polls = elapsed + pause, polls + 1
    assert polls < 40
