"""The one option validator: checks of ints, numbers, choices, flags and pairs with one message style.

Every check raises :class:`OptionError` (a ``ValueError``) whose message names the option as
``{name}``; ``str(error)`` shows the Python name (``batch_size=0: expected an int >= 1``) and
:meth:`OptionError.render` lets the command line show its flag instead (``--batch-size=0: ...``).
Training configurations, model constructors, data sets and the command line all check through
these functions, so a bad value reads the same wherever it is given. Nothing here imports torch.

Example::

    >>> check_int(0, "batch_size", minimum=1)
    Traceback (most recent call last):
    OptionError: batch_size=0: expected a positive integer
"""

from __future__ import annotations

import math
import numbers
import re
from collections import abc
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

__all__ = ["OptionError", "check_int", "check_ints", "check_number", "check_choice", "check_bool", "check_pair",
           "check_str", "check_fraction", "check_image_size", "input_tokens", "MAX_INPUT_TOKENS"]

_FIELD = re.compile(r"\{([a-z_][a-z0-9_.]*)\}")


class OptionError(ValueError):
    """An option that cannot be used; the message names options as ``{name}`` placeholders.

    ``str(error)`` writes them as the Python names, :meth:`render` as the caller wants them (the
    command line writes ``--batch-size``).
    """

    def __init__(self, template: str) -> None:
        self.template = template
        super().__init__(self.render())

    def render(self, name: Callable[[str], str] = str) -> str:
        """The message with each option written as ``name(option)``."""
        return _FIELD.sub(lambda m: name(m.group(1)), self.template)


def _field(name: str) -> str:
    """``{name}`` for an option the caller may rename, ``where: {name}`` for one named after where it was
    given (``build_datasets: val_split``); a name that is not one (``depths[2]``, ``FPN out_channels``) is
    written as given."""
    if _FIELD.fullmatch(f"{{{name}}}"):
        return f"{{{name}}}"
    where, sep, option = name.rpartition(": ")
    return f"{where}: {{{option}}}" if sep and _FIELD.fullmatch(f"{{{option}}}") else name


def _fail(name: str, value: Any, expected: str) -> OptionError:
    return OptionError(f"{_field(name)}={value!r}: expected {expected}")


def check_int(value: Any, name: str, minimum: Optional[int] = None, maximum: Optional[int] = None,
              allow_none: bool = False) -> Optional[int]:
    """``value`` as an int in ``[minimum, maximum]`` (bools refused; NumPy integers, being
    ``numbers.Integral``, accepted and returned as ``int``); None passes with ``allow_none``."""
    if value is None and allow_none:
        return None
    if not _is_int(value, minimum, maximum):
        raise _fail(name, value, _integers(minimum, maximum))
    return int(value)


def check_ints(values: Any, name: str, minimum: Optional[int] = None, maximum: Optional[int] = None,
               length: Optional[int] = None, allow_empty: bool = False) -> List[int]:
    """``values`` (a list, tuple or other sequence, not a string) as a list of ints, each in
    ``[minimum, maximum]`` as :func:`check_int` takes them: exactly ``length`` of them when given,
    else at least one unless ``allow_empty``."""
    sized = isinstance(values, abc.Sequence) and not isinstance(values, (str, bytes))
    if not sized or (len(values) != length if length is not None else not (values or allow_empty)) \
            or not all(_is_int(v, minimum, maximum) for v in values):
        kind = f"a list of {length}" if length is not None else "a list of" if allow_empty else "a non-empty list of"
        expected = f"{kind} {_integers(minimum, maximum, plural=True)}"
        raise _fail(name, values, expected)
    return [int(v) for v in values]


def _is_int(value: Any, minimum: Optional[int], maximum: Optional[int]) -> bool:
    """An integer (bools refused, ``numbers.Integral`` such as NumPy's accepted) within the bounds."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) \
        and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)


def _integers(minimum: Optional[int], maximum: Optional[int], plural: bool = False) -> str:
    """What :func:`check_int` and :func:`check_ints` expect, in words (``a positive integer``, ``integers in
    [0, 3]``)."""
    if minimum == 1 and maximum is None:
        return "positive integers" if plural else "a positive integer"
    noun = "integers" if plural else "an integer"
    if minimum is not None and maximum is not None:
        return f"{noun} in [{minimum}, {maximum}]"
    if minimum is not None:
        return f"{noun} >= {minimum}"
    return noun + (f" <= {maximum}" if maximum is not None else "")


def check_number(value: Any, name: str, minimum: Optional[float] = None, maximum: Optional[float] = None,
                 min_open: bool = False, max_open: bool = False, allow_none: bool = False) -> Optional[float]:
    """``value`` as a finite float within the bounds (``*_open``: the bound itself excluded)."""
    if value is None and allow_none:
        return None
    lo = "" if minimum is None else ("(" if min_open else "[") + f"{minimum:g}"
    hi = "" if maximum is None else f"{maximum:g}" + (")" if max_open else "]")
    if lo and hi:
        expected = f"a number in {lo}, {hi}"
    elif lo:
        expected = f"a number {'>' if min_open else '>='} {minimum:g}"
    elif hi:
        expected = f"a number {'<' if max_open else '<='} {maximum:g}"
    else:
        expected = "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(name, value, expected)
    if minimum is not None and (value < minimum or (min_open and value == minimum)):
        raise _fail(name, value, expected)
    if maximum is not None and (value > maximum or (max_open and value == maximum)):
        raise _fail(name, value, expected)
    return float(value)


def check_fraction(value: Any, name: str, allow_none: bool = False, include_one: bool = False) -> Optional[float]:
    """A fraction in ``[0, 1)`` (a probability in ``[0, 1]`` with ``include_one``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0 \
            or (value == 1.0 and not include_one):
        raise _fail(name, value, "a probability in [0, 1]" if include_one else "a fraction in [0, 1)")
    return float(value)


def check_choice(value: Any, name: str, choices: Iterable[Any], allow_none: bool = False) -> Any:
    """``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    if value is None and allow_none:
        return None
    if value not in choices:
        raise OptionError(f"{{{name}}}={value!r}: choose one of {', '.join(map(str, choices))}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """A real bool (``1`` or ``'yes'`` are refused: a recipe says ``true``/``false``)."""
    if not isinstance(value, bool):
        raise _fail(name, value, "true or false")
    return value


def check_str(value: Any, name: str, what: str = "a non-empty string", allow_none: bool = False) -> Optional[str]:
    """A non-empty string (paths given as ``os.PathLike`` are turned into strings)."""
    import os

    if value is None and allow_none:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise _fail(name, value, what)
    return value


def check_pair(value: Any, name: str, cast: Callable[[Any], Any] = int, minimum: Optional[float] = 1,
               allow_none: bool = False) -> Optional[Tuple[Any, Any]]:
    """One value or two as a pair ``(a, b)`` (``512`` -> ``(512, 512)``), each at least ``minimum``."""
    if value is None and allow_none:
        return None
    items: Sequence[Any]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        items = (value, value)
    elif isinstance(value, (list, tuple)) and len(value) in (1, 2):
        items = tuple(value) * (2 if len(value) == 1 else 1)
    else:
        raise _fail(name, value, "one or two numbers")
    kind = "integers" if cast is int else "numbers"
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (cast is int and float(v) != int(v)) \
                or not math.isfinite(v) or (minimum is not None and v < minimum):
            bound = f" >= {minimum:g}" if minimum is not None else ""
            raise _fail(name, value, f"one or two {kind}{bound}")
    return cast(items[0]), cast(items[1])


# The largest input the models are run at: 4096 x 4096 pixels, i.e. 1024 x 1024 = 1,048,576 tokens after the
# 4 x 4 patch embedding (ADE20K's 2048 x 512 test scale makes 65,536; COCO's 1333 x 800 about 66,650). Beyond
# it one activation of the first stage alone passes gigabytes: such a size is a typo, refused before allocating.
PATCH_STRIDE = 4
MAX_INPUT_TOKENS = 1024 * 1024


def input_tokens(height: int, width: int) -> int:
    """The tokens of the first stage for an ``height`` x ``width`` input (a 4 x 4 patch each, padded)."""
    return -(-int(height) // PATCH_STRIDE) * -(-int(width) // PATCH_STRIDE)


def check_image_size(value: Any, name: str, allow_none: bool = False) -> Any:
    """An input size (a side, or ``(height, width)``) the models can be run at: positive integers making at
    most :data:`MAX_INPUT_TOKENS` first-stage tokens (4096 x 4096 pixels). Returned as given.

    Raises:
        OptionError: naming ``{name}``, the size, the tokens it would make and the bound.
    """
    if value is None and allow_none:
        return None
    sides = [value, value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    try:
        h, w = (check_int(int(v) if isinstance(v, float) and v == int(v) else v, name, minimum=1) for v in sides)
    except (TypeError, ValueError):
        raise _fail(name, value, "a positive integer or a (height, width) pair") from None
    tokens = input_tokens(h, w)
    if tokens > MAX_INPUT_TOKENS:
        shown = value if isinstance(value, int) else f"{h}x{w}"
        raise OptionError(f"{{{name}}}={shown}: a {h}x{w} input makes {tokens:,} tokens at the first stage (4x4 "
                          f"pixels each); the largest accepted is {MAX_INPUT_TOKENS:,} (e.g. 4096x4096 pixels)")
    return value
