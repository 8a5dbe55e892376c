"""FHIR date / dateTime / instant values as ranges of UTC time (for _since, _at, _lastUpdated)."""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timedelta

from hub.formats.outcome import FhirError

_DT = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def parse_range(value: str, name: str = "date") -> tuple[datetime, datetime]:
    """The range [start, end] (naive UTC, end inclusive to the microsecond) that a FHIR date,
    dateTime or instant of any precision denotes. Values without a time zone are taken as UTC."""
    m = _DT.match(value.strip())
    if not m:
        raise FhirError(400, "invalid", f"{name}: {value!r} is not a FHIR date, dateTime or instant", name)
    g = m.groupdict()
    try:
        year = int(g["y"])
        if g["m"] is None:
            start, end = datetime(year, 1, 1), datetime(year + 1, 1, 1)
        elif g["d"] is None:
            month = int(g["m"])
            start = datetime(year, month, 1)
            end = start + timedelta(days=calendar.monthrange(year, month)[1])
        elif g["H"] is None:
            start = datetime(year, int(g["m"]), int(g["d"]))
            end = start + timedelta(days=1)
        else:
            frac = (g["f"] or "").ljust(6, "0")[:6]
            start = datetime(year, int(g["m"]), int(g["d"]), int(g["H"]), int(g["M"]), int(g["S"] or 0), int(frac or 0))
            if g["f"]:  # .5 is a tenth of a second, .250 a millisecond (to the microsecond at most)
                end = start + timedelta(microseconds=10 ** max(6 - len(g["f"]), 0))
            elif g["S"] is not None:
                end = start + timedelta(seconds=1)
            else:
                end = start + timedelta(minutes=1)
            tz = g["tz"]
            if tz and tz != "Z":
                sign = 1 if tz[0] == "+" else -1
                offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])) * sign
                start, end = start - offset, end - offset
    except ValueError as exc:
        raise FhirError(400, "invalid", f"{name}: {value!r} is not a valid date ({exc})", name) from None
    return start, end - timedelta(microseconds=1)


def parse_instant(value: str, name: str = "_since") -> datetime:
    """The start of the range a date/time value denotes (naive UTC)."""
    return parse_range(value, name)[0]
