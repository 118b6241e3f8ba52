"""The two S3 servers of the test stack differ where S3 is strict: SeaweedFS holds S3's rules.

These are the facts the S3 tests lean on when they run on both servers and hold the
stricter reading: a wrong ``Content-MD5`` is refused (``BadDigest``) by SeaweedFS and
stored by moto; a part below 5 MiB but the last is refused at completion
(``EntityTooSmall``) by both at their default floors (tests may lower moto's). If
SeaweedFS ever stops refusing these, the S3 tests lose their strict half.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import TYPE_CHECKING

import pytest
from botocore.exceptions import ClientError

from s2_downloader.testing.stack import S3Server, Services

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

MIB = 1024 * 1024


def _content_md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()


def _error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response.get("Error", {}).get("Code"))


def _bucket(services: Services, server: S3Server) -> str:
    client = services.s3_server(server).client_s3()
    name = f"s2dl-strict-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=name)
    return name


@pytest.mark.parametrize(("server", "refused"), [("seaweedfs", True), ("moto", False)])
def test_a_wrong_content_md5_is_refused_only_by_seaweedfs(
    services: Services, server: S3Server, refused: bool
) -> None:
    """GIVEN a part whose Content-MD5 is another body's THEN SeaweedFS says BadDigest, moto stores it."""
    client = services.s3_server(server).client_s3()
    bucket = _bucket(services, server)
    upload = client.create_multipart_upload(Bucket=bucket, Key="k.zip")["UploadId"]
    body = secrets.token_bytes(64 * 1024)

    def part_one(content_md5: str) -> None:
        client.upload_part(
            Bucket=bucket, Key="k.zip", UploadId=upload, PartNumber=1, Body=body, ContentMD5=content_md5
        )

    if refused:
        with pytest.raises(ClientError) as excinfo:
            part_one(_content_md5(b"x"))
        assert "BadDigest" == _error_code(excinfo)
    else:
        part_one(_content_md5(b"x"))
    part_one(_content_md5(body))
    client.abort_multipart_upload(Bucket=bucket, Key="k.zip", UploadId=upload)


@pytest.mark.parametrize("server", ["seaweedfs", "moto"])
def test_a_small_part_but_the_last_is_refused_at_completion(services: Services, server: S3Server) -> None:
    """GIVEN two 1 MiB parts WHEN completed THEN EntityTooSmall (moto at its default 5 MiB floor too)."""
    client = services.s3_server(server).client_s3()
    bucket = _bucket(services, server)
    upload = client.create_multipart_upload(Bucket=bucket, Key="k.zip")["UploadId"]
    parts: list[CompletedPartTypeDef] = []
    for number in (1, 2):
        body = secrets.token_bytes(MIB)
        etag = client.upload_part(Bucket=bucket, Key="k.zip", UploadId=upload, PartNumber=number, Body=body)[
            "ETag"
        ]
        parts.append({"PartNumber": number, "ETag": etag})
    with pytest.raises(ClientError) as excinfo:
        client.complete_multipart_upload(
            Bucket=bucket, Key="k.zip", UploadId=upload, MultipartUpload={"Parts": parts}
        )
    assert "EntityTooSmall" == _error_code(excinfo)


def test_metadata_set_at_create_is_on_the_object(services: Services) -> None:
    """GIVEN granule-id and md5 metadata at CreateMultipartUpload THEN HeadObject shows them, on both."""
    for server in ("moto", "seaweedfs"):
        client = services.s3_server(server).client_s3()
        bucket = _bucket(services, server)
        body = secrets.token_bytes(6 * MIB)
        meta = {"granule-id": "G1", "md5": hashlib.md5(body, usedforsecurity=False).hexdigest()}
        upload = client.create_multipart_upload(Bucket=bucket, Key="m.zip", Metadata=meta)["UploadId"]
        etag = client.upload_part(Bucket=bucket, Key="m.zip", UploadId=upload, PartNumber=1, Body=body)[
            "ETag"
        ]
        client.complete_multipart_upload(
            Bucket=bucket,
            Key="m.zip",
            UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
        )
        assert meta == client.head_object(Bucket=bucket, Key="m.zip")["Metadata"], server
