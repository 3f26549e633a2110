"""Cron expressions for scheduled retraining, checked before anything is sent to a cluster.

Kubeflow Pipelines schedules with six fields (seconds first: `0 0 3 * * 1` is 03:00 every
Monday) or a descriptor (`@daily`, `@every 12h`). People usually write five-field Unix cron;
those get a leading `0` seconds field, so `0 3 * * 1` means the same as in crontab.
"""

from __future__ import annotations

import re

from cfxray.errors import UserError

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# (name, lowest, highest, names numbered from lowest, whether "?" is allowed)
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...], bool], ...] = (
    ("second", 0, 59, (), False),
    ("minute", 0, 59, (), False),
    ("hour", 0, 23, (), False),
    ("day of month", 1, 31, (), True),
    ("month", 1, 12, _MONTHS, False),
    ("day of week", 0, 6, _DAYS, True),
)
_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def kfp_cron(expression: str) -> str:
    """The expression in KFP's six-field form; UserError naming the bad field otherwise."""
    text = " ".join(expression.split())
    if text.startswith("@"):
        return _descriptor(text)
    fields = text.split(" ")
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise UserError(f"cron {expression!r}: expected 5 fields (minute hour day month weekday) "
                        f"or 6 (with seconds first), got {len(fields)}")
    for value, spec in zip(fields, _FIELDS, strict=True):
        _check_field(expression, value, *spec)
    return " ".join(fields)


def _descriptor(text: str) -> str:
    if text in _DESCRIPTORS:
        return text
    if text.startswith("@every "):
        duration = text.removeprefix("@every ")
        if _DURATION.match(duration) and any(ch.isdigit() and ch != "0" for ch in duration):
            return text
        raise UserError(f"cron {text!r}: @every needs a positive duration like 12h or 1h30m")
    raise UserError(f"cron {text!r}: unknown descriptor; use one of {', '.join(_DESCRIPTORS)} "
                    "or @every DURATION")


def _check_field(expression: str, value: str, name: str, low: int, high: int,
                 names: tuple[str, ...], question_mark: bool) -> None:
    def fail(why: str) -> UserError:
        return UserError(f"cron {expression!r}: {name} field {value!r}: {why} "
                         f"(allowed {low}-{high})")

    if value == "?":
        if not question_mark:
            raise fail("'?' is only allowed for day of month and day of week")
        return
    for part in value.split(","):
        base, _, step = part.partition("/")
        if step and not (step.isdigit() and 0 < int(step) <= high):
            raise fail(f"bad step {step!r}")
        if base == "*":
            continue
        bounds = [_number(b, low, names) for b in base.split("-")]
        if len(bounds) > 2 or any(b is None for b in bounds):
            raise fail(f"{base!r} is not a number, range or name")
        if any(not low <= b <= high for b in bounds):  # type: ignore[operator]
            raise fail("out of range")
        if len(bounds) == 2 and bounds[0] > bounds[1]:  # type: ignore[operator]
            raise fail("range runs backwards")


def _number(text: str, low: int, names: tuple[str, ...]) -> int | None:
    if text.isdigit():
        return int(text)
    if text.upper() in names:
        return names.index(text.upper()) + low
    return None
