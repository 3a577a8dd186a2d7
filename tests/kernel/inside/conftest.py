"""Fixtures for tests that run as root inside the throw-away VM."""

from __future__ import annotations

import pytest
from ipvsadm_reader import sh


@pytest.fixture(scope="session")
def ip_vs_module() -> None:
    sh("modprobe ip_vs")


@pytest.fixture
def clean_ipvs(ip_vs_module: None):
    """An empty kernel table before and after the test."""
    sh("ipvsadm -C")
    yield
    sh("ipvsadm -C")
