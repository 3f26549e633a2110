"""The `study` section of params.yaml as a dataclass (importable without the study's
libraries, so the CLI builds its options and checks the section before any work)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cfxray.errors import UserError

# The fields a study's definition depends on: recorded in its study.json (so in its content
# hash); where the answers go and how they are reported are not.
SAMPLE_FIELDS = ("split", "seed", "pairs", "ratings", "predictions", "with_cases",
                 "saliency_steps")
# The fields a report's numbers depend on (the bootstrap's seed is the study's).
REPORT_FIELDS = ("bootstrap_resamples", "confidence", "seed")


@dataclass(frozen=True)
class StudySettings:
    model_repo: str = "model_repository"
    data: str = "data/prepared"  # prepared data; the sample comes from its `split`
    split: str = "test"
    seed: int = 0  # the sample, the item numbering and the report's bootstrap
    pairs: int = 20  # real-or-counterfactual pairs, half per target class
    ratings: int = 40  # single images, half real half counterfactual, half per class each
    predictions: int = 20  # images per arm, half per classifier decision
    with_cases: bool = False  # also rate the evaluation report's best/typical/worst cases
    saliency_steps: int = 32  # integrated-gradients steps (Captum)
    database: str = "sqlite:///studies/answers.sqlite"  # any SQLAlchemy URL
    host: str = "127.0.0.1"
    port: int = 7870
    bootstrap_resamples: int = 2000  # two-way bootstrap over readers and items
    confidence: float = 0.95
    reports: str = "reports/studies"  # `cfxray study report` writes REPORTS/<study name>

    def sample(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SAMPLE_FIELDS}

    def report(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in REPORT_FIELDS}

    def validate_sample(self) -> None:
        for name, value, multiple in (("pairs", self.pairs, 2), ("ratings", self.ratings, 4),
                                      ("predictions", self.predictions, 2)):
            if value < 0 or value % multiple:
                raise UserError(f"study {name} must be a non-negative multiple of {multiple} "
                                f"(stratified by class), got {value}")
        if not self.pairs + self.ratings + self.predictions:
            raise UserError("the study has no items: set pairs, ratings or predictions")
        if self.saliency_steps < 1:
            raise UserError("saliency_steps must be at least 1")

    def validate_report(self) -> None:
        if not 0 < self.confidence < 1 or self.bootstrap_resamples < 1:
            raise UserError("confidence must lie in (0, 1) and bootstrap_resamples be positive")
