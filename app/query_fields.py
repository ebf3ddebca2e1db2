"""The /search fields beside the picture: `text`, `text_weight`, `like`, `as` and `offset`, checked one by one
and together.

Every refusal is a 422 with a message. Which query ran is named by :func:`query_kind`, e.g. ``sketch+text``.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BeforeValidator

from encoder.model import class_text

from .errors import APIError

DEFAULT_TEXT_WEIGHT = 0.3
MAX_TEXT_CHARS = 300
INT64_MAX = 2**63 - 1
UploadAs = Literal["sketch", "photo"]
FIELDS = ("text", "text_weight", "like", "as", "offset")  # their names in a JSON body, a form and the query string


@dataclass
class QueryFields:
    text: str | None = None
    text_weight: float = DEFAULT_TEXT_WEIGHT
    like: int | None = None
    upload_as: UploadAs = "sketch"
    offset: int = 0  # results skipped before the first one returned (paging)


MAX_NUMBER_DIGITS = 19  # INT64_MAX has 19 digits: longer numbers are none of ours


def canonical_int(text: str) -> int | None:
    """The whole number `text` spells in its one canonical form (ASCII digits, no sign, spaces or leading
    zeros: "448", never " 448", "+448", "0448" or "٤٤٨"), else None. One number, one spelling: a signed URL
    or an id cannot be varied to slip past a cache, a log or a comparison."""
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_NUMBER_DIGITS:
        return None
    if len(text) > 1 and text[0] == "0":
        return None
    return int(text)


def whole_number(value: Any) -> int | None:
    """A field's whole number: a JSON integer (or integral float), or a string in canonical digits; else None."""
    if isinstance(value, str):  # a form or query-string field
        return canonical_int(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value)


def _canonical_or_refuse(value: Any) -> Any:
    if isinstance(value, str) and canonical_int(value) is None:
        raise ValueError("must be a whole number in plain digits (no sign, spaces or leading zeros)")
    return value


# Annotate a path or query parameter with this (after its Path/Query) to accept only canonical whole numbers.
PLAIN_DIGITS = BeforeValidator(_canonical_or_refuse)


def _control_character(value: str) -> str | None:
    """The first control character of `value` other than tab and line breaks (which count as spaces)."""
    for char in value:
        if char not in "\t\n\r" and unicodedata.category(char) == "Cc":
            return char
    return None


def parse_text(value: Any, max_chars: int) -> str | None:
    """The query text, NFC-normalised and trimmed; None when the field is absent."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise APIError(422, "bad_text", "text must be a string.")
    # U+FFFD is what the form and query-string parsers put where bytes were not UTF-8; lone surrogates
    # come from JSON escapes and cannot be encoded at all.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise APIError(422, "bad_text", "text is not valid UTF-8.") from None
    if "\ufffd" in value:
        raise APIError(422, "bad_text", "text is not valid UTF-8.")
    control = _control_character(value)
    if control is not None:
        raise APIError(422, "bad_text", f"text holds a control character (U+{ord(control):04X}); send words only.")
    text = " ".join(unicodedata.normalize("NFC", value).split())
    # Nothing visible (U+200B, U+2060...), or only what the prompt drops ("_" is a space in a class name)
    if all(char == " " or unicodedata.category(char) == "Cf" for char in class_text(text)):
        raise APIError(422, "bad_text", "text is empty; type some words, or leave the field out.")
    if len(text) > max_chars:
        raise APIError(422, "text_too_long", f"text is longer than {max_chars} characters ({len(text)}).")
    return text


def parse_text_weight(value: Any, default: float) -> float:
    """How much the text counts in a composed query, a number in [0, 1]."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise APIError(422, "bad_text_weight", "text_weight must be a number between 0 and 1.")
    try:
        weight = float(value)
    except (TypeError, ValueError, OverflowError):
        raise APIError(422, "bad_text_weight", "text_weight must be a number between 0 and 1.") from None
    if not math.isfinite(weight) or not 0.0 <= weight <= 1.0:
        raise APIError(422, "bad_text_weight", f"text_weight must be between 0 and 1 (got {str(value)[:20]}).")
    return weight


def _whole_number(value: Any, bad: APIError) -> int:
    """`value` (a JSON number or a form/query string in canonical digits) as an int in 0..INT64_MAX; else `bad`."""
    number = whole_number(value)
    if number is None or not 0 <= number <= INT64_MAX:
        raise bad
    return number


def parse_like(value: Any) -> int | None:
    """The id of an indexed photo whose stored vector is the query (checked against the index later)."""
    if value is None or value == "":
        return None
    return _whole_number(value, APIError(422, "bad_like", "like must be the id of an indexed photo (a whole "
                                         "number, 0 or more)."))


def parse_offset(value: Any) -> int:
    """How many results to skip (paging); its bound with k is checked against SBIR_MAX_RESULTS by the router."""
    if value is None or value == "":
        return 0
    return _whole_number(value, APIError(422, "bad_offset", "offset must be a whole number, 0 or more."))


def parse_upload_as(value: Any) -> UploadAs:
    if value is None or value == "" or value == "sketch":
        return "sketch"
    if value == "photo":
        return "photo"
    raise APIError(422, "bad_as", 'as must be "sketch" (the default) or "photo".')


def parse_query_fields(params: Mapping[str, Any], *, max_text_chars: int, default_weight: float,
                       not_utf8: Collection[str] = ()) -> QueryFields:
    """The five fields from `params` (body fields over query string); `not_utf8` names form fields whose
    bytes did not decode as UTF-8."""
    if "text" in not_utf8:
        raise APIError(422, "bad_text", "text is not valid UTF-8.")
    return QueryFields(
        text=parse_text(params.get("text"), max_text_chars),
        text_weight=parse_text_weight(params.get("text_weight"), default_weight),
        like=parse_like(params.get("like")),
        upload_as=parse_upload_as(params.get("as")),
        offset=parse_offset(params.get("offset")),
    )


def check_combination(picture: Literal["image", "strokes"] | None, fields: QueryFields) -> None:
    """Refuse the combinations that have no meaning (a sketch is one query, a liked photo another)."""
    if fields.like is not None and picture is not None:
        raise APIError(422, "like_with_sketch", "like cannot be combined with a sketch or photo: send one of them "
                       "(like combines with text).")
    if fields.upload_as == "photo" and picture == "strokes":
        raise APIError(422, "photo_from_strokes", "as=photo needs an uploaded photo; strokes are always a sketch.")
    if fields.upload_as == "photo" and picture is None:
        raise APIError(422, "missing_photo", "as=photo needs an uploaded photo file.")


def query_kind(picture: Literal["image", "strokes"] | None, fields: QueryFields) -> str:
    """sketch | photo | like | text, with +text when text is composed with one of the others."""
    if picture is not None:
        base = fields.upload_as
    elif fields.like is not None:
        base = "like"
    else:
        return "text"
    return f"{base}+text" if fields.text is not None else base


def query_kinds(has_text: bool) -> list[str]:
    """The query kinds an encoder can answer (all but the text ones need only the image tower)."""
    kinds = ["sketch", "photo", "like"]
    return kinds + ["text", "sketch+text", "photo+text", "like+text"] if has_text else kinds
