"""Hypothesis profiles, each registered with an explicit parent.

- ``s2-dev`` (the default): Hypothesis's ``default`` profile with 60 examples and no
  deadline (these tests talk to PostgreSQL and moto; a per-example deadline would flake).
- ``s2-ci`` (``HYPOTHESIS_PROFILE=s2-ci``, what ``.ci/run`` sets): Hypothesis's own ``ci``
  profile (derandomised, no example database, the reproduction blob printed on a failure)
  with 300 examples.

Hypothesis's built-in ``ci`` profile is left as it is: registering our own under that
name would replace it for every library that relies on it.
"""

import os

from hypothesis import settings

settings.register_profile("s2-dev", parent=settings.get_profile("default"), max_examples=60, deadline=None)
settings.register_profile("s2-ci", parent=settings.get_profile("ci"), max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "s2-dev"))
