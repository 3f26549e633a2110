"""Ask a running Triton server which model versions it serves, over its plain HTTP API.

Only the KServe-v2 / Triton repository endpoint is needed, so this uses urllib rather than
tritonclient (which the library must not import).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from cfxray.errors import UserError


def _base(url: str) -> str:
    url = url.rstrip("/")
    return url if "://" in url else f"http://{url}"


def loaded_versions(url: str, timeout: float = 10.0) -> list[tuple[str, int]]:
    """(model, version) pairs the server reports READY in its repository index."""
    request = urllib.request.Request(f"{_base(url)}/v2/repository/index", method="POST",
                                     data=b'{"ready": true}',
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            index = json.loads(response.read() or b"[]")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UserError(f"cannot read the model index of the Triton server at {url}: {exc}") from exc
    loaded = []
    for entry in index:
        if entry.get("state", "READY") == "READY" and str(entry.get("version", "")).isdigit():
            loaded.append((str(entry["name"]), int(entry["version"])))
    return loaded
