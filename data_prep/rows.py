"""Text validation and the mapping of a checked record to one parquet row (pure functions)."""

from __future__ import annotations

from typing import Any

from data_prep.images import PreparedImage
from data_prep.records import WHOLE_ROW_FIELDS, Problem, RowTemplate, SourceRecord
from verl_ext.task import IMAGE_PLACEHOLDER, answer_type, build_prompt, clean_answer


def text_problems(record: SourceRecord, template: RowTemplate) -> list[Problem]:
    """Problems of the question/answer text and of the placeholder count (images not opened)."""
    problems: list[Problem] = []
    if any(p.field in WHOLE_ROW_FIELDS for p in record.problems):
        return problems  # the row as a whole is unusable; its fields cannot be judged

    def problem(field: str, reason: str, detail: str = "") -> None:
        problems.append(Problem(record.row, record.source, field, reason, detail))

    if record.question is not None and not record.question.strip():
        problem(template.question_field, "empty_question")
    if record.answer is not None and not clean_answer(record.answer):
        problem(template.answer_field, "empty_answer")
    image_already_reported = any(p.field.startswith(template.image_field) for p in record.problems)
    if not record.images and not image_already_reported:
        problem(template.image_field, "no_image")
    if record.question is not None:
        placeholders = record.question.count(IMAGE_PLACEHOLDER)
        if placeholders and placeholders != len(record.images):
            problem(
                template.question_field,
                "placeholder_count",
                f"{placeholders} <image> placeholder(s) for {len(record.images)} image(s)",
            )
    return problems


def prompt_text(question: str, num_images: int, cot: bool) -> str:
    """The user message: the question as written (with one `<image>` per image, prepended when it
    has none), then the CoT instruction when `cot`."""
    if IMAGE_PLACEHOLDER not in question:
        question = IMAGE_PLACEHOLDER * num_images + question
    return build_prompt(question, cot=cot)


def image_entry(image: PreparedImage, max_pixels: int | None, min_pixels: int | None) -> dict[str, Any]:
    entry: dict[str, Any] = (
        {"bytes": image.data, "path": image.name} if image.data is not None else {"image": image.file}
    )
    if max_pixels is not None:
        entry["max_pixels"] = max_pixels
    if min_pixels is not None:
        entry["min_pixels"] = min_pixels
    return entry


def build_row(
    record: SourceRecord,
    images: list[PreparedImage],
    split: str,
    template: RowTemplate,
    *,
    max_pixels: int | None,
    min_pixels: int | None,
) -> dict[str, Any]:
    """One verl row (geo3k layout) from a record whose text and images passed every check."""
    assert record.question is not None and record.answer is not None
    question = record.question  # not stripped: the reference's prompt is "{question}\n{instruction}"
    answer = clean_answer(record.answer)
    return {
        "data_source": template.data_source,
        "prompt": [{"role": "user", "content": prompt_text(question, len(images), template.cot)}],
        "images": [image_entry(image, max_pixels, min_pixels) for image in images],
        "ability": template.ability,
        "reward_model": {"style": "rule", "ground_truth": record.answer},
        "extra_info": {
            "split": split,
            "index": record.row,
            "question": question,
            "answer": answer,
            "answer_type": answer_type(question, answer),
        },
    }
