"""Integration fixtures: each part of the throwaway stack owns a fixtures module."""

from tests.integration.fixtures_hub import *  # noqa: F403
from tests.integration.fixtures_postgres import *  # noqa: F403
from tests.integration.fixtures_sqs import *  # noqa: F403
from tests.integration.fixtures_stack import *  # noqa: F403
