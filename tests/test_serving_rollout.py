"""One served version everywhere: the rollout state, rollback, retention, and two real servers
on one repository following a publish and a rollback without a failed request."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from serving_support import MAX_BATCH, SIZE, xray_like

from cfxray import contract as c
from cfxray.cli import main
from cfxray.export.model_repository import publish
from cfxray.export.rollout import prune, set_served, status
from cfxray.export.settings import ServingSettings
from cfxray.export.triton_config import read_config

SETTINGS = ServingSettings(max_batch_size=MAX_BATCH, preferred_batch_sizes=(2, 4),
                           max_queue_delay_microseconds=1000, intra_op_threads=1)


def _publish_copy_of_v1(repo: Path, tmp_path: Path) -> int:
    """Publish version 1's files again as the next version, through the export's publish."""
    staged = {}
    for name in c.MODEL_NAMES:
        staged[name] = tmp_path / f"staged-{time.monotonic_ns()}" / name
        shutil.copytree(repo / name / "1", staged[name])
    return publish(staged, repo, None, SIZE, SETTINGS, lambda *args: None)


def _policies(repo: Path) -> set[str]:
    """The version policy of every config file of every model, as text."""
    found = set()
    for name in c.MODEL_NAMES:
        for config_name in (None, *(p.stem for p in (repo / name / c.CUSTOM_CONFIG_DIR).glob("*"))):
            policy = read_config(repo / name, config_name).version_policy
            found.add(" ".join(str(policy).split()))
    return found


@pytest.fixture
def repo(serving_repo, tmp_path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(serving_repo, copy)
    return copy


def test_rollback_pins_every_model_and_survives_the_next_export(repo, tmp_path, capsys):
    assert _publish_copy_of_v1(repo, tmp_path) == 2
    assert _policies(repo) == {"latest { num_versions: 1 }"}
    assert main(["rollout", "rollback", "--to", "1", "--model-repo", str(repo)]) == 0
    assert _policies(repo) == {"specific { versions: 1 }"}
    assert _publish_copy_of_v1(repo, tmp_path) == 3  # a later export keeps the pin
    assert _policies(repo) == {"specific { versions: 1 }"}
    assert status(repo) | {"history": []} == {
        "repository": str(repo), "versions": [1, 2, 3], "latest": 3, "pinned": 1, "served": 1,
        "history": []}
    assert main(["rollout", "latest", "--model-repo", str(repo)]) == 0
    assert _policies(repo) == {"latest { num_versions: 1 }"}
    assert [(h["action"], h["from"], h["to"]) for h in status(repo)["history"]] == [
        ("rollback", 2, 1), ("latest", 1, 3)]
    capsys.readouterr()
    assert main(["rollout", "rollback", "--to", "7", "--model-repo", str(repo)]) == 2
    assert "version 7 is not in every model" in capsys.readouterr().err
    assert main(["rollout", "status", "--model-repo", str(tmp_path / "none")]) == 0


def test_retention_keeps_the_newest_versions_and_the_pinned_one(repo, tmp_path):
    for _ in range(3):
        _publish_copy_of_v1(repo, tmp_path)
    set_served(repo, 1, "rollback")
    assert prune(repo, keep=2) == [2]
    assert {name: c.model_versions(repo / name) for name in c.MODEL_NAMES} == {
        name: [1, 3, 4] for name in c.MODEL_NAMES}
    assert not [p for p in repo.glob("*/.pruned-*")]
    set_served(repo, None, "latest")
    assert prune(repo, keep=2) == [1]


def _served_version(url: str) -> str:
    from cfxray.serving.client import TritonModels

    with TritonModels(url) as models:
        _, version = models.infer(c.EXPLAIN, {c.IMAGE: xray_like(1),
                                              c.TARGET_CLASS: _targets(1)}, [c.PROBABILITIES])
    return version


def _targets(n: int):
    import numpy as np

    return np.full((n, 1), c.AUTO_TARGET, dtype=np.int32)


def _wait_until_both_serve(urls: list[str], version: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(_served_version(u) == version for u in urls):
            return
        time.sleep(0.5)
    raise AssertionError(f"not every server serves version {version} after {timeout_s} s: "
                         f"{[_served_version(u) for u in urls]}")


class _Load:
    """Clients sending explain requests to every server, back to back, until stopped."""

    def __init__(self, urls: list[str]) -> None:
        self.answers: list[tuple[str, str]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(u,), daemon=True)
                         for u in urls]

    def _run(self, url: str) -> None:
        from cfxray.serving.client import ServingError, TritonModels

        images = xray_like(2, seed=5)
        with TritonModels(url) as models:
            while not self._stop.is_set():
                try:
                    _, version = models.infer(c.EXPLAIN, {c.IMAGE: images,
                                                          c.TARGET_CLASS: _targets(2)},
                                              [c.COUNTERFACTUAL])
                    self.answers.append((url, version))
                except ServingError as exc:
                    self.failures.append(f"{url}: {exc}")

    def __enter__(self) -> _Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def test_two_servers_follow_a_publish_and_a_rollback_without_a_failed_request(repo, tmp_path):
    from cfxray.serving.triton import LocalTritonServer, Ports, free_ports

    with LocalTritonServer(repo, Ports(*free_ports(3)), poll_s=1) as a, \
            LocalTritonServer(repo, Ports(*free_ports(3)), poll_s=1) as b:
        urls = [a.endpoints["http"], b.endpoints["http"]]
        assert [_served_version(u) for u in urls] == ["1", "1"]
        with _Load(urls) as load:
            assert _publish_copy_of_v1(repo, tmp_path) == 2
            _wait_until_both_serve(urls, "2")
            seen_after_publish = len(load.answers)
            set_served(repo, 1, "rollback")
            _wait_until_both_serve(urls, "1")
            assert _publish_copy_of_v1(repo, tmp_path) == 3  # pinned: nobody moves to 3
            time.sleep(3 * 1 + 2)  # three poll intervals of both the follower and Triton
            assert [_served_version(u) for u in urls] == ["1", "1"]
        print(f"rollout under load: {len(load.answers)} requests answered, "
              f"{len(load.failures)} failed")
        assert not load.failures, load.failures[:3]
        assert {v for _, v in load.answers} == {"1", "2"}
        assert {u for u, _ in load.answers[seen_after_publish:]} == set(urls)
        assert a.sync_errors == b.sync_errors == []
