"""The CDSE token from SSM, as HLS's token rotator keeps it: moto's SSM and Secrets Manager, the simulator."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterator

import boto3
import pytest
import urllib3

from s2_downloader.adapters.hub import CdseHub, CdseTokens
from s2_downloader.adapters.hub.ssm_tokens import SsmTokens, hls_token_parameter
from s2_downloader.adapters.ssm import SsmParameter, ssm_client
from s2_downloader.domain.errors import DeadlineExceeded, FailureKind, HubError
from s2_downloader.entrypoints.config import Settings
from s2_downloader.entrypoints.wiring import cdse_token_source
from s2_downloader.testing.hubsim import HubSimulator
from s2_downloader.testing.stack import Services


@pytest.fixture
def aws_env(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3 in this process reaches moto server, which speaks SSM and Secrets Manager too."""
    for key, value in services.sqs.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_SQS")


@pytest.fixture
def pool() -> Iterator[urllib3.PoolManager]:
    """The process's pool."""
    made = urllib3.PoolManager(num_pools=4, maxsize=4)
    yield made
    made.clear()


def _grant(hub: HubSimulator, services: Services, pool: urllib3.PoolManager) -> str:
    """A token the simulator honours, as HLS's token rotator gets one (a password grant)."""
    response = pool.request(
        "POST",
        hub.identity_url,
        fields={
            "client_id": "cdse-public",
            "grant_type": "password",
            "username": services.hub_username,
            "password": services.hub_password,
        },
        encode_multipart=False,
    )
    assert 200 == response.status
    token: str = json.loads(response.data)["access_token"]
    return token


def _put(name: str, value: str) -> None:
    boto3.client("ssm").put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)


def _hub(hub: HubSimulator, pool: urllib3.PoolManager, tokens: SsmTokens | CdseTokens) -> CdseHub:
    return CdseHub(
        pool=pool, tokens=tokens, checksum_url=hub.catalogue_url, zipper_url=hub.zipper_url, read_timeout=5
    )


def _parameter_name() -> str:
    return f"/s2dl-test/{secrets.token_hex(4)}/copernicus-token"


@pytest.mark.usefixtures("aws_env")
def test_the_token_is_read_once_and_kept(services: Services, pool: urllib3.PoolManager) -> None:
    """The parameter is read on first use; a later change is not seen while CDSE accepts the token."""
    hub = services.hub
    product = hub.add_product("SSMKEEP", 1024)
    name = _parameter_name()
    _put(name, _grant(hub, services, pool))
    cdse = _hub(
        hub,
        pool,
        SsmTokens(parameter=SsmParameter(client=ssm_client(), name=name), identity_url=hub.identity_url),
    )
    assert product.md5 == cdse.checksum("SSMKEEP")
    _put(name, "not-a-token")
    assert product.md5 == cdse.checksum("SSMKEEP")
    assert [] == [r for r in hub.requests_to("cdse_checksum", "SSMKEEP") if r.status == 401]


@pytest.mark.usefixtures("aws_env")
def test_a_401_reads_the_parameter_again(services: Services, pool: urllib3.PoolManager) -> None:
    """When CDSE refuses the held token, the rotated one is read from SSM and the request succeeds."""
    hub = services.hub
    product = hub.add_product("SSMROTATE", 1024)
    name = _parameter_name()
    _put(name, _grant(hub, services, pool))
    cdse = _hub(
        hub,
        pool,
        SsmTokens(parameter=SsmParameter(client=ssm_client(), name=name), identity_url=hub.identity_url),
    )
    assert product.md5 == cdse.checksum("SSMROTATE")
    hub.expire_tokens()
    _put(name, _grant(hub, services, pool))
    assert product.md5 == cdse.checksum("SSMROTATE")
    statuses = [r.status for r in hub.requests_to("cdse_checksum", "SSMROTATE")]
    assert [200, 401, 200] == statuses


@pytest.mark.usefixtures("aws_env")
def test_a_token_still_refused_after_the_reread_is_unauthorized(
    services: Services, pool: urllib3.PoolManager
) -> None:
    """A stale parameter (the rotator stopped) defers the download as UNAUTHORIZED after one re-read."""
    hub = services.hub
    hub.add_product("SSMSTALE", 1024)
    name = _parameter_name()
    _put(name, _grant(hub, services, pool))
    hub.expire_tokens()
    cdse = _hub(
        hub,
        pool,
        SsmTokens(parameter=SsmParameter(client=ssm_client(), name=name), identity_url=hub.identity_url),
    )
    with pytest.raises(HubError) as caught:
        cdse.checksum("SSMSTALE")
    assert FailureKind.UNAUTHORIZED == caught.value.kind
    assert [401, 401] == [r.status for r in hub.requests_to("cdse_checksum", "SSMSTALE")]


@pytest.mark.usefixtures("aws_env")
def test_a_missing_parameter_is_unauthorized(services: Services, pool: urllib3.PoolManager) -> None:
    """COPERNICUS_TOKEN_PARAMETER naming no parameter defers each download; nothing reaches the hub."""
    hub = services.hub
    hub.add_product("SSMNONE", 1024)
    name = _parameter_name()
    cdse = _hub(
        hub,
        pool,
        SsmTokens(parameter=SsmParameter(client=ssm_client(), name=name), identity_url=hub.identity_url),
    )
    with pytest.raises(HubError) as caught:
        cdse.checksum("SSMNONE")
    assert FailureKind.UNAUTHORIZED == caught.value.kind
    assert name in str(caught.value)
    assert [] == hub.requests_to("cdse_checksum", "SSMNONE")


@pytest.mark.usefixtures("aws_env")
def test_the_token_stays_out_of_reprs_and_logs(
    services: Services, pool: urllib3.PoolManager, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither the token source's repr nor its log lines show the token."""
    hub = services.hub
    hub.add_product("SSMQUIET", 1024)
    name = _parameter_name()
    token = _grant(hub, services, pool)
    _put(name, token)
    tokens = SsmTokens(parameter=SsmParameter(client=ssm_client(), name=name), identity_url=hub.identity_url)
    # Our own loggers at their most verbose (botocore's debug output is botocore's).
    with caplog.at_level(logging.DEBUG, logger="s2_downloader"):
        _hub(hub, pool, tokens).checksum("SSMQUIET")
    assert token not in repr(tokens) + caplog.text


@pytest.mark.usefixtures("aws_env")
def test_no_read_starts_when_it_could_outlive_the_deadline(services: Services) -> None:
    """With less time left than one SSM call can take, the read is not started."""
    tokens = SsmTokens(
        parameter=SsmParameter(client=ssm_client(), name=_parameter_name()),
        identity_url=services.hub.identity_url,
    )
    with pytest.raises(DeadlineExceeded):
        tokens.authorization(deadline=time.monotonic() + 1.0)


@pytest.mark.usefixtures("aws_env")
def test_stage_uses_the_rotators_parameter_when_it_exists(
    services: Services, pool: urllib3.PoolManager
) -> None:
    """STAGE without credentials reads /hls-s2-downloader-serverless/<STAGE>/copernicus-token."""
    stage = f"stage-{secrets.token_hex(3)}"
    token = _grant(services.hub, services, pool)
    boto3.client("ssm").put_parameter(Name=hls_token_parameter(stage), Value=token, Type="String")
    source = cdse_token_source(Settings.from_env({"STAGE": stage}), pool)
    assert isinstance(source, SsmTokens)
    assert f"Bearer {token}" == source.authorization()


@pytest.mark.usefixtures("aws_env")
def test_stage_without_the_parameter_grants_with_the_copernicus_secret(
    services: Services, pool: urllib3.PoolManager
) -> None:
    """STAGE without the rotator's parameter makes its own grants with .../copernicus-credentials."""
    stage = f"stage-{secrets.token_hex(3)}"
    boto3.client("secretsmanager").create_secret(
        Name=f"hls-s2-downloader-serverless/{stage}/copernicus-credentials",
        SecretString=json.dumps({"username": services.hub_username, "password": services.hub_password}),
    )
    settings = Settings.from_env({"STAGE": stage, "COPERNICUS_IDENTITY_URL": services.hub.identity_url})
    source = cdse_token_source(settings, pool)
    assert isinstance(source, CdseTokens)
    assert (services.hub_username, True) == (source.username, source.authorization().startswith("Bearer "))


@pytest.mark.usefixtures("aws_env")
def test_the_token_parameter_variable_needs_no_credentials(
    services: Services, pool: urllib3.PoolManager
) -> None:
    """COPERNICUS_TOKEN_PARAMETER alone is enough: no password, no grant."""
    name = _parameter_name()
    token = _grant(services.hub, services, pool)
    _put(name, token)
    grants = len(services.hub.requests_to("token"))
    settings = Settings.from_env({"COPERNICUS_TOKEN_PARAMETER": name})
    settings.require_hub()
    source = cdse_token_source(settings, pool)
    assert f"Bearer {token}" == source.authorization()
    assert grants == len(services.hub.requests_to("token"))


@pytest.mark.usefixtures("aws_env")
def test_a_token_with_a_newline_is_refused_unsent_and_unshown(
    services: Services, pool: urllib3.PoolManager
) -> None:
    """A token parameter written with a newline inside: UNAUTHORIZED, nothing sent, the value not shown."""
    hub = services.hub
    hub.add_product("SSMNEWLINE", 1024)
    name = _parameter_name()
    _put(name, "SECRETTOKEN\nX-Injected: 1")
    cdse = _hub(
        hub,
        pool,
        SsmTokens(parameter=SsmParameter(client=ssm_client(), name=name), identity_url=hub.identity_url),
    )
    with pytest.raises(HubError) as caught:
        cdse.checksum("SSMNEWLINE")
    assert FailureKind.UNAUTHORIZED == caught.value.kind
    assert "control character" in str(caught.value)
    assert "SECRETTOKEN" not in str(caught.value)
    assert [] == hub.requests_to("cdse_checksum", "SSMNEWLINE")
