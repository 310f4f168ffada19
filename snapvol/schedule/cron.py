"""Cron expressions: the five fields (minute hour day-of-month month day-of-week) with ``*``,
lists, ranges and steps, the ``@hourly``/``@daily``/``@weekly``/``@monthly``/``@yearly`` names, and
``@every <N>s|m|h`` for a fixed interval. Times are this machine's local time, as cron's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from snapvol.errors import UsageError

_NAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_EVERY = re.compile(r"@every\s+(\d+)\s*([smh])")
_UNIT = {"s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: the sets of minutes, hours, days, months and weekdays (0 = Sunday), or
    a fixed interval in seconds."""

    text: str
    fields: tuple[frozenset[int], ...] = ()
    every: int | None = None
    dom_any: bool = True
    dow_any: bool = True

    def next_after(self, after: datetime) -> datetime:
        """The first time strictly after ``after`` (naive local time) this schedule fires."""
        if self.every is not None:
            return after + timedelta(seconds=self.every)
        t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
        minutes, hours, days, months, weekdays = self.fields
        for _ in range(366 * 24 * 60):  # at most a year of minutes (a leap day: four years)
            if t.month not in months:
                t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
                continue
            if not self._day_matches(t, days, weekdays):
                t = t.replace(hour=0, minute=0) + timedelta(days=1)
                continue
            if t.hour not in hours:
                t = t.replace(minute=0) + timedelta(hours=1)
                continue
            if t.minute not in minutes:
                t += timedelta(minutes=1)
                continue
            return t
        raise UsageError(f"schedule {self.text!r} never fires")

    def _day_matches(self, t: datetime, days: frozenset[int], weekdays: frozenset[int]) -> bool:
        dom, dow = t.day in days, (t.isoweekday() % 7) in weekdays
        if self.dom_any or self.dow_any:  # cron: one restricted field decides
            return dom and dow
        return dom or dow  # both restricted: either matches


def _field(text: str, low: int, high: int, where: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() else None
        if step_text and (step is None or step == 0):
            raise UsageError(f"schedule {where!r}: bad step in {part!r}")
        if body == "*":
            start, end = low, high
        elif "-" in body:
            a, _, b = body.partition("-")
            if not (a.isdigit() and b.isdigit()):
                raise UsageError(f"schedule {where!r}: bad range {part!r}")
            start, end = int(a), int(b)
        elif body.isdigit():
            start = int(body)
            end = high if step else start
        else:
            raise UsageError(f"schedule {where!r}: cannot read {part!r}")
        if not (low <= start <= end <= high):
            raise UsageError(f"schedule {where!r}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step or 1))
    return frozenset(values)


def parse(text: str) -> Schedule:
    """The schedule ``text`` says; UsageError, naming it, when it cannot be read."""
    spec = text.strip()
    every = _EVERY.fullmatch(spec)
    if every:
        seconds = int(every[1]) * _UNIT[every[2]]
        if seconds <= 0:
            raise UsageError(f"schedule {text!r}: the interval must be positive")
        return Schedule(text, every=seconds)
    parts = _NAMES.get(spec, spec).split()
    if len(parts) != 5:
        raise UsageError(
            f"schedule {text!r}: a cron expression has five fields (minute hour day month "
            "weekday), or is @daily, @hourly... or @every 10m"
        )
    fields = [_field(p, lo, hi, text) for p, (lo, hi) in zip(parts, _RANGES, strict=True)]
    weekdays = frozenset(d % 7 for d in fields[4])  # 7 is Sunday too
    return Schedule(
        text,
        (fields[0], fields[1], fields[2], fields[3], weekdays),
        dom_any=parts[2] == "*",
        dow_any=parts[4] == "*",
    )


_DOW = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


def on_calendar(schedule: Schedule) -> str | None:
    """systemd's ``OnCalendar=`` for a cron schedule (None for ``@every``: use
    ``OnUnitActiveSec=``). Exact, field by field; both day fields restricted (cron's "either")
    has no single expression: refused."""
    if schedule.every is not None:
        return None
    minutes, hours, days, months, weekdays = schedule.fields
    if not schedule.dom_any and not schedule.dow_any:
        raise UsageError(
            f"schedule {schedule.text!r} restricts both the day of the month and the weekday "
            "(cron runs on either): systemd cannot say that; split it in two jobs"
        )

    def listed(values: frozenset[int], full: int, width: int = 2) -> str:
        return "*" if len(values) == full else ",".join(f"{v:0{width}d}" for v in sorted(values))

    dow = "" if schedule.dow_any else ",".join(_DOW[d] for d in sorted(weekdays)) + " "
    return (
        f"{dow}*-{listed(months, 12)}-{listed(days, 31)} "
        f"{listed(hours, 24)}:{listed(minutes, 60)}:00"
    )
