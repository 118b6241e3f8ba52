"""A hub simulator: DHuS and CDSE on one 127.0.0.1 origin, with scripted faults.

Real HTTP/1.1 with keep-alive, so the adapters are tested on the wire; product bytes are
synthetic and deterministic. The package's modules: ``server.py`` (``HubSimulator``, its
life cycle and scripting), ``routes.py`` with ``dhus.py`` and ``cdse.py`` (what each hub
answers), ``exchange.py`` (one request and its answer), ``catalogue.py``, ``identity.py``,
``requestlog.py``, ``faults.py`` and ``content.py``::

    with HubSimulator(username="u", password="p") as sim:
        product = sim.add_product("p1", 10_000_000, faults=[Fault.status(503, retry_after="2")])
"""

from s2_downloader.testing.hubsim.cdse import TOKEN_PATH
from s2_downloader.testing.hubsim.content import SimProduct
from s2_downloader.testing.hubsim.faults import Fault
from s2_downloader.testing.hubsim.requestlog import RecordedRequest
from s2_downloader.testing.hubsim.server import HubSimulator, http_date

__all__ = ["TOKEN_PATH", "Fault", "HubSimulator", "RecordedRequest", "SimProduct", "http_date"]
