"""``fetch``: the download use case for one product, on the in-memory fake hub and a directory."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from s2_downloader.domain.errors import BadRequest, FailureKind
from s2_downloader.entrypoints.config import Settings
from s2_downloader.entrypoints.fetch import FetchHub, FetchResult, default_filename, fetch
from tests.unit.fakes import FakeHub, HubFault

HUB = "https://hub.test"
PRODUCT = bytes(range(256)) * 5


@attrs.define
class FetchableHub(FakeHub):
    """The fake hub with the links a message would carry."""

    def product_url(self, granule_id: str) -> str:
        """A link on the fake hub."""
        return f"{HUB}/products/{granule_id}"

    def accepts_download_url(self, url: str) -> None:
        """Only the fake hub's links."""
        if not url.startswith(HUB):
            raise BadRequest(f"{url} is not on the fake hub")


@attrs.define
class Fetcher:
    """``fetch`` into one directory, its waits recorded instead of slept."""

    directory: Path
    hub: FetchableHub = attrs.field(factory=lambda: FetchableHub(chunk_size=100))
    waits: list[float] = attrs.field(factory=list)
    said: list[str] = attrs.field(factory=list)

    def __call__(self, granule_id: str, filename: str | None = None) -> FetchResult:
        hub: FetchHub = self.hub
        return fetch(
            Settings(max_download_retries=3, max_defer_seconds=3600.0),
            granule_id,
            directory=self.directory,
            filename=filename,
            say=self.said.append,
            sleep=self.waits.append,
            hub=hub,
        )

    def files(self) -> list[str]:
        """The names in the directory, hidden ones included."""
        return sorted(path.name for path in self.directory.iterdir())


@pytest.fixture
def fetcher(tmp_path: Path) -> Fetcher:
    """A fetcher into an empty directory."""
    return Fetcher(directory=tmp_path)


def test_the_product_lands_verified_under_the_hubs_name(fetcher: Fetcher) -> None:
    """The hub's name with .SAFE made .zip names the file, which holds the product; nothing else is left."""
    fetcher.hub.add("P1", PRODUCT, name="S2B_MSIL1C_P1.SAFE")

    result = fetcher("P1")

    assert fetcher.directory / "S2B_MSIL1C_P1.zip" == result.path
    assert PRODUCT == result.path.read_bytes()
    assert ["S2B_MSIL1C_P1.zip"] == fetcher.files()


def test_an_unknown_id_ends_at_once_with_the_hubs_answer(fetcher: Fetcher) -> None:
    """A product the hub does not know is exit 1, not_found, without waiting or writing anything."""
    result = fetcher("NOPE")

    assert (1, [], []) == (result.exit_code, fetcher.waits, fetcher.files())
    assert result.error is not None
    assert result.error.startswith("not_found")


def test_refused_credentials_end_at_once(fetcher: Fetcher) -> None:
    """A hub refusing our credentials at the checksum is final: exit 1, unauthorized, no wait."""
    fetcher.hub.add("P1", PRODUCT)
    fetcher.hub.checksum_faults["P1"] = [HubFault.fail(FailureKind.UNAUTHORIZED)]

    result = fetcher("P1", filename="p1.zip")

    assert (1, []) == (result.exit_code, fetcher.waits)
    assert result.error is not None
    assert result.error.startswith("unauthorized")


def test_throttling_is_waited_out_as_the_hub_asks(fetcher: Fetcher) -> None:
    """A throttled checksum is waited out for its Retry-After, then the product is verified."""
    fetcher.hub.add("P1", PRODUCT)
    fetcher.hub.checksum_faults["P1"] = [HubFault.fail(FailureKind.THROTTLED, retry_after=7)]

    result = fetcher("P1")

    assert ([7], 0) == (fetcher.waits, result.exit_code)
    assert 1 == len(fetcher.said)


def test_a_broken_transfer_is_resumed_from_the_bytes_held(fetcher: Fetcher) -> None:
    """A body cut short is retried after the back-off, from the byte the partial holds."""
    fetcher.hub.add("P1", PRODUCT)
    fetcher.hub.download_faults["P1"] = [HubFault(short_by=300)]

    result = fetcher("P1")

    assert PRODUCT == (fetcher.directory / "P1.zip").read_bytes()
    assert (0, 1) == (result.exit_code, len(fetcher.waits))
    assert [0, len(PRODUCT) - 300] == [offset for _, offset, _ in fetcher.hub.requests]


def test_a_verified_file_already_there_is_not_downloaded_again(fetcher: Fetcher) -> None:
    """A file at DIR/NAME whose MD5 is the hub's is kept as it is, with no product request."""
    fetcher.hub.add("P1", PRODUCT)
    (fetcher.directory / "mine.zip").write_bytes(PRODUCT)

    result = fetcher("P1", filename="mine.zip")

    assert (0, 0) == (result.exit_code, fetcher.hub.downloads["P1"])
    assert ["mine.zip"] == fetcher.files()


def test_a_wrong_file_already_there_is_replaced_by_the_product(fetcher: Fetcher) -> None:
    """A file at DIR/NAME whose MD5 is not the hub's is replaced by a verified download."""
    fetcher.hub.add("P1", PRODUCT)
    (fetcher.directory / "mine.zip").write_bytes(b"not the product")

    result = fetcher("P1", filename="mine.zip")

    assert (0, PRODUCT) == (result.exit_code, (fetcher.directory / "mine.zip").read_bytes())


@pytest.mark.parametrize(
    ("listed", "expected"),
    [
        ("S2A_MSIL1C_X.SAFE", "S2A_MSIL1C_X.zip"),
        ("S2A_MSIL1C_X", "S2A_MSIL1C_X.zip"),
        ("S2A_MSIL1C_X.zip", "S2A_MSIL1C_X.zip"),
        (".hidden.SAFE", "ID.zip"),
        (None, "ID.zip"),
    ],
)
def test_the_default_filename_comes_from_the_hubs_name(listed: str | None, expected: str) -> None:
    """.SAFE becomes .zip, .zip is added when missing, and no usable name falls back to <ID>.zip."""
    assert expected == default_filename(listed, "ID")
