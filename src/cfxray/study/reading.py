"""What the reading page may ask and send, checked here, apart from the web framework.

A reader is known by an ID they type (a pseudonym, never a name). Their next item is the
first unanswered one in their own order, read back from the database, so closing the page
and coming back resumes where they stopped, from any browser. An answer is stored only when
everything about it is right: this study, a valid reader ID, an item of the study that is the
reader's current one, one of the item's choices, a plausible time. Anything else is refused
with a status and one line, and nothing stored before is touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cfxray.study.definition import PAIRS, Item, Study
from cfxray.study.store import MAX_READER, Answer, AnswerStore, Duplicate

READER_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_READER - 1}}}")
MAX_ELAPSED_MS = 24 * 3600 * 1000  # a day: longer means the timer is broken, not the reader
ANSWER_FIELDS = {"study": str, "reader": str, "item": str, "answer": str, "elapsed_ms": int}


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Desk:
    study: Study
    store: AnswerStore

    def check_reader(self, reader: Any) -> str:
        if not isinstance(reader, str) or not READER_ID.fullmatch(reader):
            raise Refused(400, f"a reader ID is 1-{MAX_READER} letters, digits, '.', '_' or "
                               "'-', starting with a letter or digit")
        return reader

    def describe(self) -> dict[str, Any]:
        """The study as the page shows it: names, instructions, captions; no key."""
        d = self.study.definition
        return {"name": self.study.name, "sha256": self.study.sha256, "tasks": d["tasks"],
                "captions": d["captions"], "total": len(self.study.items)}

    def next(self, reader: str) -> dict[str, Any]:
        """The reader's progress and their next item (None when they are done)."""
        reader = self.check_reader(reader)
        done = self.store.answered(self.study.sha256, reader)
        order = self.study.order(reader)
        current = next((item for item in order if item.id not in done), None)
        position = sum(1 for item in order if item.id in done)
        return {"reader": reader, "answered": position, "total": len(order),
                "item": None if current is None else self._shown(reader, current)}

    def _shown(self, reader: str, item: Item) -> dict[str, Any]:
        """An item as the page gets it; for pairs each image carries the answer a click on
        it gives (its slot), the sides drawn per reader."""
        pairs = item.task == PAIRS
        return {"id": item.id, "task": item.task, "arm": item.arm, "choices": item.choices,
                "images": [{"url": f"images/{token}.png",
                            "answer": item.choices[item.images.index(token)] if pairs else None}
                           for token in self.study.shown_images(reader, item)]}

    def answer(self, payload: Any) -> dict[str, Any]:
        """Store one answer; returns the reader's progress and next item."""
        if not isinstance(payload, dict):
            raise Refused(400, "an answer is a JSON object with fields "
                               f"{', '.join(ANSWER_FIELDS)}")
        missing = sorted(set(ANSWER_FIELDS) - set(payload))
        extra = sorted(set(payload) - set(ANSWER_FIELDS))
        if missing or extra:
            raise Refused(400, f"answer fields: missing {missing or 'none'}, unknown "
                               f"{extra or 'none'}")
        for name, kind in ANSWER_FIELDS.items():
            if not isinstance(payload[name], kind) or isinstance(payload[name], bool):
                raise Refused(400, f"answer field {name!r} must be of type {kind.__name__}")
        if payload["study"] != self.study.sha256:
            raise Refused(409, "this answer is for another version of the study (content "
                               f"hash {payload['study'][:12]!r}, served {self.study.sha256[:12]}); "
                               "reload the page")
        reader = self.check_reader(payload["reader"])
        item = self.study.items.get(payload["item"])
        if item is None:
            raise Refused(404, f"the study has no item {payload['item'][:40]!r}")
        if payload["answer"] not in item.choices:
            raise Refused(400, f"{payload['answer'][:40]!r} is not an answer to {item.id} "
                               f"(one of {', '.join(item.choices)})")
        if not 0 <= payload["elapsed_ms"] <= MAX_ELAPSED_MS:
            raise Refused(400, f"elapsed_ms must lie in 0..{MAX_ELAPSED_MS}")
        state = self.next(reader)
        if item.id in self.store.answered(self.study.sha256, reader):
            raise Refused(409, f"reader {reader!r} has already answered {item.id}; the first "
                               "answer stands")
        if state["item"] is None or state["item"]["id"] != item.id:
            raise Refused(409, f"{item.id} is not reader {reader!r}'s current item "
                               f"({state['item']['id'] if state['item'] else 'none left'})")
        try:
            self.store.add(Answer(self.study.sha256, self.study.name, reader, item.id,
                                  item.task, payload["answer"], payload["elapsed_ms"]))
        except Duplicate as exc:  # the same answer sent twice at once: the database decides
            raise Refused(409, f"{exc}; the first answer stands") from None
        return self.next(reader)
