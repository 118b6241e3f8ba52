"""Integration fixtures (each part of the throwaway stack owns a fixtures module), and the marker.

Every test under this directory is marked ``integration`` here, so no module can forget it:
``pytest -m "not integration"`` runs only the fast tier.
"""

from pathlib import Path

import pytest

from tests.integration.fixtures_hub import *  # noqa: F403
from tests.integration.fixtures_postgres import *  # noqa: F403
from tests.integration.fixtures_s3 import *  # noqa: F403
from tests.integration.fixtures_sqs import *  # noqa: F403
from tests.integration.fixtures_stack import *  # noqa: F403

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test collected from this directory ``integration``."""
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)
