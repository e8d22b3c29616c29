"""training.cluster's Ray start: no warning that Ray's own default causes."""

from __future__ import annotations

import logging

from ray._private.authentication import authentication_token_setup as token_setup

from training.cluster import _not_token_notice, quiet_token_auth_notice


def test_token_auth_notice_dropped_and_auth_off_warning_kept(caplog):
    quiet_token_auth_notice()
    quiet_token_auth_notice()  # idempotent
    with caplog.at_level(logging.WARNING, logger=token_setup.logger.name):
        token_setup._warn_token_auth_enabled()  # what every new local instance printed
        token_setup._warn_token_auth_disabled()  # a cluster without auth: still said
    messages = [r.getMessage() for r in caplog.records]
    assert not any("Token authentication is enabled" in m for m in messages), messages
    assert any("Token authentication is disabled" in m for m in messages), messages
    assert token_setup.logger.filters.count(_not_token_notice) == 1
