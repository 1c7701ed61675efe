"""Warm capacity on a schedule: an experiment kept at N containers through set hours of set days.

Why this module exists: traffic teaches the policies when an experiment is used, but an owner often
knows it already — a demo in office hours, a batch every weekday morning — and wants no cold start
in those hours whatever the traffic did the day before. A registry entry may name such windows
(`[[experiments.<id>.warm]]`: days, hours, containers, timezone); the controller keeps at least that
many containers from the pre-warm lead before a window opens until it closes, on every backend, on
top of what the policy plans (core.keepwarm.controller). This module holds the windows, their
validation and the one pure question: how many containers the schedule asks for at a moment, and
when that changes.

A window's hours are local time in its IANA timezone (default UTC), "HH:MM-HH:MM"; an end before the
start runs past midnight into the next day ("22:00-02:00" on a Friday ends Saturday 02:00). Days are
"daily", "weekdays", "weekends", or names and ranges of mon..sun ("mon-fri", "sat,sun", "mon-wed,fri").
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_NAMED = {"daily": "mon-sun", "weekdays": "mon-fri", "weekends": "sat,sun"}
_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
#: The most containers a window may ask for (MODAL_MAX_CONTAINERS caps what is granted anyway).
MAX_SCHEDULED = 100
#: How far ahead `WarmSchedule.at` looks for the next change: a week holds every window's start and end.
_WEEK_S = 7 * 24 * 3600


def day_set(days: str) -> frozenset[int]:
    """"mon-fri" → {0..4}; ValueError naming the accepted forms."""
    text = _NAMED.get(days.strip().lower(), days.strip().lower())
    chosen: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if first not in DAYS or (dash and last not in DAYS):
            raise ValueError(f"days {days!r}: use daily, weekdays, weekends, or names and ranges of "
                             f"{', '.join(DAYS)} (e.g. mon-fri, sat,sun)")
        a, b = DAYS.index(first), DAYS.index(last or first)
        chosen.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(chosen)


def minutes_of(hours: str) -> tuple[int, int]:
    """"09:00-18:00" → (540, 1080) minutes after midnight; ValueError naming the form."""
    match = _HOURS.match(hours.strip())
    if match is None:
        raise ValueError(f"hours {hours!r}: use HH:MM-HH:MM, 24-hour local time (e.g. 09:00-18:00; 22:00-02:00 "
                         "runs past midnight)")
    h1, m1, h2, m2 = map(int, match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end or end > 24 * 60:
        raise ValueError(f"hours {hours!r}: the end must differ from the start, and be 24:00 at the latest")
    return start, end


class WarmWindow(BaseModel):
    """At least `containers` containers through `hours` (local time in `timezone`) on `days`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    days: str = Field(default="daily", max_length=64)
    hours: str
    containers: int = Field(default=1, ge=1, le=MAX_SCHEDULED)
    timezone: str = Field(default="UTC", max_length=64)

    @field_validator("days")
    @classmethod
    def _days(cls, value: str) -> str:
        day_set(value)
        return value

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        minutes_of(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        _zone(value)
        return value

    @classmethod
    def parse(cls, text: str) -> "WarmWindow":
        """The command line's form: "DAYS HH:MM-HH:MM [xN] [TIMEZONE]" (e.g. "mon-fri 09:00-18:00 x2
        Europe/Berlin"); ValueError saying what is wrong."""
        words = text.split()
        if len(words) < 2:
            raise ValueError(f"{text!r}: use DAYS HH:MM-HH:MM [xN] [TIMEZONE], e.g. 'mon-fri 09:00-18:00 x1 UTC'")
        fields: dict[str, object] = {"days": words[0], "hours": words[1]}
        for word in words[2:]:
            if re.fullmatch(r"x\d+", word):
                fields["containers"] = int(word[1:])
            else:
                fields["timezone"] = word
        return cls(**fields)  # type: ignore[arg-type]

    def spans(self, around_s: float) -> list[tuple[float, float]]:
        """The window's (start, end) unix times that overlap the week from a day before `around_s`."""
        zone = _zone(self.timezone)
        days, (start_min, end_min) = day_set(self.days), minutes_of(self.hours)
        end_min = end_min if end_min > start_min else end_min + 24 * 60  # past midnight: into the next day
        first = datetime.fromtimestamp(around_s, zone).date() - timedelta(days=1)
        spans = []
        for offset in range(9):
            day = first + timedelta(days=offset)
            if day.weekday() in days:
                midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
                spans.append((_at(midnight, start_min), _at(midnight, end_min)))
        return spans

    def describe(self) -> str:
        return f"{self.days} {self.hours} x{self.containers} {self.timezone}"


def _at(midnight: datetime, minutes: int) -> float:
    """Unix time `minutes` of wall-clock time after `midnight` in its zone (a DST day keeps the wall time)."""
    day = midnight + timedelta(days=minutes // (24 * 60))
    local = day.replace(hour=(minutes % (24 * 60)) // 60, minute=minutes % 60)
    return local.astimezone(timezone.utc).timestamp()


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone {name!r}: not an IANA time zone name (e.g. UTC, Europe/Berlin, America/New_York)") from None


class ScheduledNow(NamedTuple):
    """What a schedule asks for at one moment: containers (0: nothing), and seconds until that changes."""

    containers: int
    changes_in_s: float | None


def scheduled(windows: tuple[WarmWindow, ...], now_s: float, lead_s: float = 0.0) -> ScheduledNow:
    """The containers `windows` ask for at unix time `now_s` — each window from `lead_s` before it opens
    (its containers are warm when it opens) until it closes — and the seconds until that changes."""
    if not windows:
        return ScheduledNow(0, None)
    containers, changes = 0, []
    for window in windows:
        for start, end in window.spans(now_s):
            start -= lead_s
            if start <= now_s < end:
                containers = max(containers, window.containers)
            changes += [t - now_s for t in (start, end) if now_s < t <= now_s + _WEEK_S]
    return ScheduledNow(containers, min(changes) if changes else None)
