"""Cron expressions in words on the web UI's task pages (hydra/web/ui/cronwords.py)."""

from __future__ import annotations

import pytest

from hydra.web.ui.cronwords import cron_words


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("30 2 * * *", "every day at 02:30 Australia/Sydney"),
        ("0 30 2 * * *", "every day at 02:30 Australia/Sydney"),  # seconds first, on the minute
        ("0 9 * * 1-5", "every weekday at 09:00 Australia/Sydney"),
        ("0 9 * * 1,3", "every Monday and Wednesday at 09:00 Australia/Sydney"),
        ("0 9 * * sun", "every Sunday at 09:00 Australia/Sydney"),
        ("0 9 * * 7", "every Sunday at 09:00 Australia/Sydney"),
        ("15 6 1 * *", "on day 1 of every month at 06:15 Australia/Sydney"),
        ("15 * * * *", "every hour at minute 15 Australia/Sydney"),
        ("0 */6 * * *", "every 6 hours at minute 0 Australia/Sydney"),
        ("*/5 * * * *", "every 5 minutes"),  # the zone changes nothing
        ("* * * * *", "every minute"),
    ],
)
def test_common_shapes_read_as_words(expression: str, words: str) -> None:
    assert cron_words(expression, "Australia/Sydney") == words


@pytest.mark.parametrize(
    "expression",
    ["0 9 * 1 *", "1,2 3 * * *", "0 9 1 * 1", "5 0 9 * * *", "0 9-17 * * *", "0 9 * * 1-3"],
)
def test_other_shapes_are_shown_raw(expression: str) -> None:
    assert cron_words(expression, "Europe/Paris") == f"cron {expression} Europe/Paris"


def test_an_empty_zone_is_utc() -> None:
    assert cron_words("0 3 * * *", "") == "every day at 03:00 UTC"
