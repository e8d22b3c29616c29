"""Which headlines the sentiment window leaves out and why (`dropped` in every sentiment answer):
counted by reason, the nearest few named, newest first."""

from __future__ import annotations

import pandas as pd

from sentiment.aggregate import AggregateSettings, dropped_headlines, in_window
from sentiment.news import Headline

AS_OF = pd.Timestamp("2025-05-01T12:00:00Z")


def _at(hours_before: float, title: str | None = None) -> Headline:
    return Headline(title or f"{hours_before:g} h before", AS_OF - pd.Timedelta(hours=hours_before))


def test_too_old_and_after_as_of_are_counted_and_named():
    headlines = [_at(1), _at(73), _at(-2), _at(72), Headline("undated"), _at(500)]
    dropped = dropped_headlines(headlines, AS_OF, AggregateSettings(), limit=10)
    assert (dropped["too_old"], dropped["after_as_of"]) == (2, 1)
    assert [(d["title"], d["reason"]) for d in dropped["headlines"]] == [
        ("-2 h before", "published after as_of"),
        ("73 h before", "older than the 72 h window before as_of"),
        ("500 h before", "older than the 72 h window before as_of"),
    ]
    assert dropped["headlines"][1]["published_at"] == "2025-04-28T11:00:00+00:00"
    kept, _ = in_window(headlines, AS_OF, AggregateSettings())
    assert len(kept) + 3 == len(headlines)  # exactly what the window did not keep


def test_the_list_is_bounded_and_keeps_the_nearest():
    headlines = [_at(100 + i) for i in range(50)] + [_at(-1 - i) for i in range(3)]
    dropped = dropped_headlines(headlines, AS_OF, AggregateSettings(max_age_hours=24), limit=5)
    assert (dropped["too_old"], dropped["after_as_of"]) == (50, 3)
    assert [d["title"] for d in dropped["headlines"]] == [
        "-3 h before",
        "-2 h before",
        "-1 h before",
        "100 h before",
        "101 h before",
    ]
    assert dropped["headlines"][-1]["reason"] == "older than the 24 h window before as_of"


def test_nothing_dropped():
    dropped = dropped_headlines([_at(0), Headline("undated")], AS_OF, AggregateSettings(), 10)
    assert dropped == {"too_old": 0, "after_as_of": 0, "headlines": []}
