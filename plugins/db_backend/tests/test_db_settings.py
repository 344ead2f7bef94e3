"""The db settings: the retry names every retry in deimos uses, the old ones still accepted."""

from __future__ import annotations

import pytest

from deimos_db.settings import DbPollerSettings


def test_the_old_retry_setting_names_still_work_and_say_their_new_names() -> None:
    with pytest.warns(FutureWarning) as warned:
        old = DbPollerSettings.model_validate(
            {"producer_class": "m:P", "retries": 4, "retry_backoff": 0.25})
    assert [str(w.message) for w in warned] == [
        "db.pollers[].retries is deprecated; use db.pollers[].retry.attempts",
        "db.pollers[].retry_backoff is deprecated; use db.pollers[].retry.backoff"]
    assert (old.retry.attempts, old.retry.backoff) == (5, 0.25)  # 4 retries: 5 attempts
    with pytest.raises(ValueError, match=r"retry_backoff and db\.pollers\[\]\.retry\.backoff "
                       "are both set"):
        DbPollerSettings.model_validate(
            {"producer_class": "m:P", "retry_backoff": 1, "retry": {"backoff": 2}})


def test_the_db_producers_old_backoff_names_still_work_and_say_their_new_names() -> None:
    from deimos_db.settings import DbProducerSettings

    with pytest.warns(FutureWarning) as warned:
        old = DbProducerSettings.model_validate({"retry_backoff": 2, "max_retry_backoff": 9})
    assert [str(w.message) for w in warned] == [
        "db.producer.retry_backoff is deprecated; use db.producer.retry.backoff",
        "db.producer.max_retry_backoff is deprecated; use db.producer.retry.max_backoff"]
    assert (old.retry.backoff, old.retry.max_backoff, old.retry.jitter) == (2, 9, 0.2)
