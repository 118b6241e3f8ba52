"""SSM Parameter Store: one parameter, read with short timeouts.

What is kept there today is the CDSE access token HLS's token rotator writes
(``adapters/hub/ssm_tokens.py`` reads it through ``SsmParameter``). boto3 errors become
``SsmError`` here; a parameter's value is never logged, shown in a ``repr`` or put in an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs
import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from s2_downloader.domain.errors import S2DownloaderError

if TYPE_CHECKING:
    from mypy_boto3_ssm.client import SSMClient

__all__ = [
    "SSM_STEP_SECONDS",
    "ParameterNotFound",
    "SsmError",
    "SsmParameter",
    "ssm_client",
]

#: The SSM client's limits: a token read happens inside a download attempt, so it is short.
_CONNECT_SECONDS: Final = 3
_READ_SECONDS: Final = 5
_ATTEMPTS: Final = 2
#: botocore's standard retry mode sleeps at most this long before its second attempt.
_RETRY_PAUSE_SECONDS: Final = 2.0
#: The longest one ``GetParameter`` can take with the client above, retries included.
SSM_STEP_SECONDS: Final = (
    _ATTEMPTS * (_CONNECT_SECONDS + _READ_SECONDS) + (_ATTEMPTS - 1) * _RETRY_PAUSE_SECONDS
)
#: The longest piece of a parameter name put in an error.
DETAIL_LIMIT: Final = 200


class SsmError(S2DownloaderError):
    """A parameter could not be read (access denied, throttled, unreachable...)."""


class ParameterNotFound(SsmError):
    """No parameter of that name exists."""


def ssm_client() -> SSMClient:
    """An SSM client whose every call ends within ``SSM_STEP_SECONDS``."""
    config = Config(
        connect_timeout=_CONNECT_SECONDS,
        read_timeout=_READ_SECONDS,
        retries={"max_attempts": _ATTEMPTS, "mode": "standard"},
    )
    return boto3.session.Session().client("ssm", config=config)


@attrs.define
class SsmParameter:
    """One SSM parameter, read with decryption (a SecureString or a plain String alike)."""

    client: SSMClient = attrs.field(repr=False)
    name: str

    def read(self) -> str:
        """The parameter's value; ``ParameterNotFound`` or ``SsmError`` otherwise."""
        try:
            response = self.client.get_parameter(Name=self.name, WithDecryption=True)
            value = response["Parameter"]["Value"]
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code") or "Unknown")
            if code == "ParameterNotFound":
                msg = f"SSM parameter {self.name[:DETAIL_LIMIT]} does not exist"
                raise ParameterNotFound(msg) from None
            # Only the code: AWS messages name the parameter and the caller, never the value,
            # but nothing from the answer needs to travel further than this.
            msg = f"SSM GetParameter {self.name[:DETAIL_LIMIT]} failed: {code[:60]}"
            raise SsmError(msg) from None
        except (BotoCoreError, KeyError, TypeError) as exc:
            msg = f"SSM GetParameter {self.name[:DETAIL_LIMIT]} failed: {type(exc).__name__}"
            raise SsmError(msg) from None
        if not isinstance(value, str):
            msg = f"SSM parameter {self.name[:DETAIL_LIMIT]} holds no text"
            raise SsmError(msg)
        return value

    def exists(self) -> bool:
        """Whether the parameter exists (and can be read); ``SsmError`` when that cannot be told."""
        try:
            self.read()
        except ParameterNotFound:
            return False
        return True
