"""s2-downloader for HLS's CDK app: the ``S2Downloader`` construct and the deployment's facts.

``from s2_downloader_cdk import S2Downloader`` loads aws-cdk-lib (and starts node through
jsii); ``s2_downloader_cdk.facts`` needs neither, so the SAM template's tests read the same
facts without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from s2_downloader_cdk.construct import S2Downloader

__all__ = ["S2Downloader"]


def __getattr__(name: str) -> Any:
    if name == "S2Downloader":
        from s2_downloader_cdk.construct import S2Downloader  # noqa: PLC0415 - aws-cdk-lib only when asked

        return S2Downloader
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
