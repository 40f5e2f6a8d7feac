"""The option validator: what check_int and check_ints accept, what they refuse, and the one message style
``NAME=VALUE: expected ...`` (an OptionError, i.e. a ValueError)."""

import numpy as np
import pytest

from hilovit.options import OptionError, check_int, check_ints


def test_check_int_bounds_bools_and_numpy_integers():
    assert check_int(3, "n", minimum=1) == 3
    value = check_int(np.int64(7), "n", minimum=0, maximum=7)
    assert value == 7 and type(value) is int
    assert check_int(None, "n", allow_none=True) is None
    for bad, kwargs, expected in [
        (0, dict(minimum=1), "n=0: expected a positive integer"),
        (True, dict(minimum=1), "n=True: expected a positive integer"),
        (np.bool_(True), {}, f"n={np.bool_(True)!r}: expected an integer"),
        (2.0, {}, "n=2.0: expected an integer"),
        (4, dict(minimum=0, maximum=3), "n=4: expected an integer in [0, 3]"),
        (-2, dict(minimum=-1), "n=-2: expected an integer >= -1"),
        (6, dict(maximum=5), "n=6: expected an integer <= 5"),
        (None, {}, "n=None: expected an integer"),
    ]:
        with pytest.raises(OptionError) as err:
            check_int(bad, "n", **kwargs)
        assert str(err.value) == expected
        assert isinstance(err.value, ValueError)


def test_check_ints_lengths_bounds_and_messages():
    assert check_ints((1, np.int32(2)), "sizes", minimum=1) == [1, 2]
    assert all(type(v) is int for v in check_ints([np.int64(0)], "sizes"))
    assert check_ints([], "steps", allow_empty=True) == []
    assert check_ints(range(3), "ids", maximum=2) == [0, 1, 2]
    for bad, kwargs, expected in [
        ([], dict(minimum=1), "sizes=[]: expected a non-empty list of positive integers"),
        ([1, 0], dict(minimum=1), "sizes=[1, 0]: expected a non-empty list of positive integers"),
        ([0, 4], dict(minimum=0, maximum=3), "sizes=[0, 4]: expected a non-empty list of integers in [0, 3]"),
        ((1, 2, 3), dict(minimum=1, length=2), "sizes=(1, 2, 3): expected a list of 2 positive integers"),
        ([1, True], {}, "sizes=[1, True]: expected a non-empty list of integers"),
        ([1.0], dict(allow_empty=True), "sizes=[1.0]: expected a list of integers"),
        ("12", {}, "sizes='12': expected a non-empty list of integers"),
        (5, {}, "sizes=5: expected a non-empty list of integers"),
    ]:
        with pytest.raises(OptionError) as err:
            check_ints(bad, "sizes", **kwargs)
        assert str(err.value) == expected


def test_the_command_line_can_show_its_flag():
    with pytest.raises(OptionError) as err:
        check_ints([0], "lr_steps", minimum=1)
    assert err.value.render(lambda name: "--" + name.replace("_", "-")) == \
        "--lr-steps=[0]: expected a non-empty list of positive integers"


def test_a_name_given_with_where_it_came_from_keeps_the_option_renamable():
    with pytest.raises(OptionError) as err:
        check_int(0, "build_datasets: img_size", minimum=1)
    assert str(err.value) == "build_datasets: img_size=0: expected a positive integer"
    assert err.value.render(lambda name: "--" + name.replace("_", "-")) == \
        "build_datasets: --img-size=0: expected a positive integer"
    with pytest.raises(OptionError) as err:  # not an option name: written as given
        check_int(0, "FPN out_channels", minimum=1)
    assert err.value.render(lambda name: "--" + name) == "FPN out_channels=0: expected a positive integer"
