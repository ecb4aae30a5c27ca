"""Shared fixtures for the client-compatibility tests.

These tests talk to a running Parapet started by tests/python/run.sh, which exports
PARAPET_API_BASE (e.g. http://127.0.0.1:PORT/client/v4) and PARAPET_API_TOKEN.
"""

import os
import secrets

import pytest

from parapet_testlib import RawApi


def pytest_configure(config):
    missing = [v for v in ("PARAPET_API_BASE", "PARAPET_API_TOKEN") if not os.environ.get(v)]
    if missing:
        raise pytest.UsageError(
            "missing %s: run these tests through tests/python/run.sh, which starts Parapet"
            % ", ".join(missing)
        )


@pytest.fixture(scope="session")
def api_base():
    return os.environ["PARAPET_API_BASE"]


@pytest.fixture(scope="session")
def api_token():
    return os.environ["PARAPET_API_TOKEN"]


@pytest.fixture(scope="session")
def raw(api_base, api_token):
    return RawApi(api_base, api_token)


@pytest.fixture
def new_zone_name():
    """Returns a function giving a fresh, unused zone name on each call."""

    def make(prefix="t"):
        return "%s-%s.com" % (prefix, secrets.token_hex(5))

    return make
