"""The reading page in a real headless Chromium (Debian's, via Selenium), and its API.

Two simulated readers complete a small study through the page, one with the keyboard, one
with the mouse; the first pauses, then leaves and comes back. The database then holds
exactly the answers given, and the report's numbers are the ones computed here from those
answers and the study's key. Malformed and duplicate submissions are refused without
touching what is stored.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest
from study_builder import cfxray, create_study, study_params
from test_serving_app import CHROME_FLAGS, CHROMEDRIVER, CHROMIUM

from cfxray.serving.triton import free_ports
from cfxray.study.definition import PAIRS, PREDICTION, RATING, load_study
from cfxray.study.store import Answer, AnswerStore, Duplicate


@pytest.fixture(scope="module")
def study(study_project, tmp_path_factory):
    return load_study(create_study(study_project, tmp_path_factory.mktemp("reading") / "ward"))


@pytest.fixture(scope="module")
def database(study):
    return f"sqlite:///{study.folder.parent / 'answers.sqlite'}"


@pytest.fixture(scope="module")
def page(study, database):
    from cfxray.study.server import launch

    running = launch(study.folder, database, port=free_ports(1)[0], block=False)
    yield running
    running.close()


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        if os.environ.get("CI"):
            pytest.fail("chromium/chromium-driver missing: .ci/run installs them")
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


# --- driving the page ------------------------------------------------------------------------


def _wait(browser, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(condition)


def _by_id(browser, element_id: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, element_id)


def _enter(browser, url: str, reader: str) -> None:
    from selenium.webdriver.common.keys import Keys

    browser.get(url)
    _wait(browser, lambda b: _by_id(b, "study-hash").text)
    field = _by_id(browser, "reader-id")
    field.clear()
    field.send_keys(reader, Keys.ENTER)
    _wait(browser, lambda b: _by_id(b, "reading").is_displayed() or _by_id(b, "done")
          .is_displayed())


def _ready(browser) -> str:
    """The current item's ID once its images are on screen (the clock running)."""
    reading = _by_id(browser, "reading")
    _wait(browser, lambda b: reading.get_attribute("data-ready") == "1")
    return reading.get_attribute("data-item")


def _answer(browser, k: int, keyboard: bool) -> tuple[str, str]:
    """Answer the current item as a simulated reader would: from what the page shows, with
    keys or clicks chosen by position. Returns (item, answer given)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    item = _ready(browser)
    images = browser.find_elements(By.CSS_SELECTOR, "#images img")
    if item.startswith("pair"):
        side = k % 2 if keyboard else (k + 1) % 2
        answer = images[side].get_attribute("data-answer")
        action = ("1", Keys.ARROW_RIGHT)[side] if keyboard else images[side]
    elif item.startswith("rate"):
        answer = str(1 + k % 5) if keyboard else str(5 - k % 5)
        action = answer if keyboard else \
            browser.find_element(By.CSS_SELECTOR, f"#choices [data-answer='{answer}']")
    else:
        answer = ("NORMAL", "PNEUMONIA")[k % 2] if keyboard else \
            ("NORMAL", "PNEUMONIA")[int(k % 3 != 0)]
        action = answer[0].lower() if keyboard else \
            browser.find_element(By.CSS_SELECTOR, f"#choices [data-answer='{answer}']")
    if keyboard:
        browser.find_element(By.TAG_NAME, "body").send_keys(action)
    else:
        action.click()
    _wait(browser, lambda b: _by_id(b, "done").is_displayed()
          or _by_id(b, "reading").get_attribute("data-item") != item)
    return item, answer


def _store_rows(study, database) -> list[dict]:
    store = AnswerStore(database)
    try:
        return store.rows(study.sha256)
    finally:
        store.close()


def test_two_readers_complete_the_study_and_the_report_matches(browser, page, study, database,
                                                               tmp_path):
    total = len(study.items)
    given: dict[str, list[tuple[str, str]]] = {"reader-a": [], "reader-b": []}

    # Reader A, keyboard: answers, pauses, answers, leaves, comes back, finishes.
    _enter(browser, page.url, "reader-a")
    for k in range(5):
        given["reader-a"].append(_answer(browser, k, keyboard=True))
    from selenium.webdriver.common.keys import Keys

    paused_on = _ready(browser)
    body = browser.find_element("tag name", "body")
    body.send_keys(Keys.ESCAPE)
    _wait(browser, lambda b: _by_id(b, "paused").is_displayed())
    assert not _by_id(browser, "reading").is_displayed()  # the images are hidden
    body.send_keys("1", "n")  # keys are ignored while paused
    assert len([r for r in _store_rows(study, database) if r["reader"] == "reader-a"]) == 5
    _by_id(browser, "resume").click()
    _wait(browser, lambda b: _by_id(b, "reading").is_displayed())
    assert _ready(browser) == paused_on
    assert _by_id(browser, "progress").text == f"6 / {total}"
    for k in range(5, 10):
        given["reader-a"].append(_answer(browser, k, keyboard=True))
    browser.get("about:blank")  # closes the page mid-study ...
    _enter(browser, page.url, "reader-a")  # ... and comes back later
    assert _by_id(browser, "progress").text == f"11 / {total}"
    for k in range(10, total):
        given["reader-a"].append(_answer(browser, k, keyboard=True))
    assert "All 16 items are answered" in _by_id(browser, "done").text

    # Reader B, mouse only, in one go.
    _enter(browser, page.url, "reader-b")
    for k in range(total):
        given["reader-b"].append(_answer(browser, k, keyboard=False))
    assert _by_id(browser, "done").is_displayed()
    assert not re.search(r"img\d+\.png|p_pneumonia|real_source|key\.json", browser.page_source)

    # Each reader got their own order; the database holds exactly the answers given.
    for reader, answers in given.items():
        assert [item for item, _ in answers] == [i.id for i in study.order(reader)]
    rows = _store_rows(study, database)
    assert sorted((r["reader"], r["item"], r["answer"]) for r in rows) == sorted(
        (reader, item, answer) for reader, answers in given.items() for item, answer in answers)
    assert all(r["elapsed_ms"] >= 0 and r["task"] == study.items[r["item"]].task for r in rows)

    # The report's numbers are the ones the answers and the key give.
    out = tmp_path / "report"
    params = study_params(tmp_path / "params.yaml")
    assert cfxray("study", "report", "--study", study.folder, "--database", database, "--out",
                  out, "--params", params) == 0
    summary = json.loads((out / "summary.json").read_text())
    _check_numbers(summary, study.key(), given)
    csv_rows = (out / "answers.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + 2 * total


def _check_numbers(summary: dict, key: dict, given: dict) -> None:
    answers = [(reader, item, a) for reader, rows in given.items() for item, a in rows]

    def share(rows, truth) -> float:
        return float(np.mean([a == truth(item) for _, item, a in rows]))

    tasks = summary["tasks"]
    pairs = [r for r in answers if key[r[1]]["task"] == PAIRS]
    assert tasks[PAIRS]["value"] == pytest.approx(share(pairs, lambda i: key[i]["real"]))
    assert tasks[PAIRS]["answers"] == len(pairs) == 8
    assert tasks[PAIRS]["correct"] == sum(a == key[i]["real"] for _, i, a in pairs)
    for reader in given:
        mine = [r for r in pairs if r[0] == reader]
        assert tasks[PAIRS]["per_reader"][reader] == pytest.approx(
            share(mine, lambda i: key[i]["real"]))
    expected = _fleiss(pairs)
    assert tasks[PAIRS]["fleiss_kappa"] == (None if expected is None else pytest.approx(expected))

    ratings = [r for r in answers if key[r[1]]["task"] == RATING]
    for kind in ("real", "counterfactual"):
        values = [int(a) for _, i, a in ratings if key[i]["kind"] == kind]
        assert tasks[RATING][kind]["value"] == pytest.approx(np.mean(values))
        assert sum(tasks[RATING][kind]["histogram"].values()) == len(values)
    assert tasks[RATING]["difference"]["value"] == pytest.approx(
        tasks[RATING]["real"]["value"] - tasks[RATING]["counterfactual"]["value"])

    for arm in ("counterfactual", "saliency"):
        rows = [r for r in answers if key[r[1]]["task"] == PREDICTION and key[r[1]]["arm"] == arm]
        part = tasks[PREDICTION][arm]
        assert part["value"] == pytest.approx(share(rows, lambda i: key[i]["decision"]))
        assert part["answers"] == len(rows) == 8
        assert part["low"] <= part["value"] <= part["high"]


def _fleiss(rows) -> float | None:
    """Fleiss' kappa by the textbook formula, as an independent check."""
    items = sorted({i for _, i, _ in rows})
    categories = sorted({a for _, _, a in rows})
    counts = np.array([[sum(1 for _, j, a in rows if j == i and a == c) for c in categories]
                       for i in items], dtype=float)
    n = counts.sum(axis=1)[0]
    p_j = counts.sum(axis=0) / counts.sum()
    p_i = ((counts ** 2).sum(axis=1) - n) / (n * (n - 1))
    p_e = (p_j ** 2).sum()
    return None if p_e == 1 else float((p_i.mean() - p_e) / (1 - p_e))


# --- the API without a browser -------------------------------------------------------------


def _call(url: str, body: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None
                                     else "GET", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_malformed_and_duplicate_answers_are_refused_and_nothing_is_lost(page, study,
                                                                         database):
    status, state = _call(f"{page.url}api/readers/api-reader")
    assert status == 200 and state["answered"] == 0
    first = state["item"]
    good = {"study": study.sha256, "reader": "api-reader", "item": first["id"],
            "answer": first["choices"][0], "elapsed_ms": 1500}
    status, state = _call(f"{page.url}api/answers", json.dumps(good).encode())
    assert status == 201 and state["answered"] == 1
    current = state["item"]
    stored = _store_rows(study, database)

    other_item = next(i for i in study.items if i not in (first["id"], current["id"]))
    valid_next = {**good, "item": current["id"], "answer": current["choices"][0]}
    bad = [
        (b"not json", 400, "not JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({k: v for k, v in valid_next.items() if k != "answer"}).encode(), 400,
         "missing ['answer']"),
        (json.dumps({**valid_next, "correct": True}).encode(), 400, "unknown ['correct']"),
        (json.dumps({**valid_next, "elapsed_ms": "900"}).encode(), 400, "must be of type int"),
        (json.dumps({**valid_next, "elapsed_ms": True}).encode(), 400, "must be of type int"),
        (json.dumps({**valid_next, "elapsed_ms": -5}).encode(), 400, "elapsed_ms"),
        (json.dumps({**valid_next, "study": "0" * 64}).encode(), 409, "another version"),
        (json.dumps({**valid_next, "reader": "../etc"}).encode(), 400, "reader ID"),
        (json.dumps({**valid_next, "reader": ""}).encode(), 400, "reader ID"),
        (json.dumps({**valid_next, "item": "pair-99"}).encode(), 404, "no item"),
        (json.dumps({**valid_next, "answer": "maybe"}).encode(), 400, "not an answer"),
        (json.dumps({**good, "answer": first["choices"][-1]}).encode(), 409, "already answered"),
        (json.dumps({**valid_next, "item": other_item,
                     "answer": study.items[other_item].choices[0]}).encode(), 409,
         "not reader 'api-reader''s current item"),
        (b"{" + b" " * 5000 + b"}", 413, "at most"),
    ]
    for body, code, words in bad:
        status, reply = _call(f"{page.url}api/answers", body)
        assert (status, words in reply.get("error", "")) == (code, True), (body[:80], reply)
    assert _store_rows(study, database) == stored  # nothing added, nothing changed

    # The database refuses a duplicate by itself, whoever writes it.
    store = AnswerStore(database)
    try:
        with pytest.raises(Duplicate):
            store.add(Answer(study.sha256, study.name, "api-reader", first["id"],
                             study.items[first["id"]].task, first["choices"][-1], 10))
    finally:
        store.close()
    assert _store_rows(study, database) == stored

    # The page is still serving, and nothing beyond the study's images is reachable.
    status, state = _call(f"{page.url}api/answers", json.dumps(valid_next).encode())
    assert status == 201 and state["answered"] == 2
    for path in ("images/..%2Fkey.json", "images/key.json", "images/study.png", "key.json"):
        assert _call(f"{page.url}{path}")[0] == 404
    status, described = _call(f"{page.url}api/study")
    assert status == 200 and set(described) == {"name", "sha256", "tasks", "captions", "total"}
    assert _call(f"{page.url}api/readers/bad%20id")[0] == 400


def test_items_carry_nothing_that_unblinds(page, study):
    """What the page receives about every item: IDs, image URLs, choices, the arm; never
    which image is real, what the classifier decided or which file an image came from."""
    key = study.key()
    status, state = _call(f"{page.url}api/readers/blind-check")
    seen = 0
    while state["item"] is not None:
        item = state["item"]
        assert set(item) == {"id", "task", "arm", "choices", "images"}
        text = json.dumps(item)
        truth = key[item["id"]]
        for value in (truth.get("source"), truth.get("real_source"),
                      truth.get("counterfactual_source")):
            assert value is None or value not in text
        assert all(re.fullmatch(r"images/[0-9a-f]{16}\.png", i["url"]) for i in item["images"])
        body = {"study": study.sha256, "reader": "blind-check", "item": item["id"],
                "answer": item["choices"][0], "elapsed_ms": 1}
        status, state = _call(f"{page.url}api/answers", json.dumps(body).encode())
        assert status == 201
        seen += 1
    assert seen == len(study.items)
