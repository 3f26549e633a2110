"""The container image every component runs in: the project's own, built from `Dockerfile`.

Read once when the components are defined (KFP bakes it into the compiled pipeline), so set
`CFXRAY_IMAGE` before compiling or submitting to point a cluster at your registry's copy.
"""

import os

from cfxray import __version__

DEFAULT_IMAGE = f"cfxray:{__version__}"
CFXRAY_IMAGE = os.environ.get("CFXRAY_IMAGE") or DEFAULT_IMAGE
