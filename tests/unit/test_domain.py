"""The content types a check-in may declare (shared.domain.checkin)."""

from __future__ import annotations

import pytest

from shared.domain.checkin import ACCEPTED_CONTENT_TYPES, check_content_type
from shared.domain.errors import InputError


@pytest.mark.parametrize("content_type", ["video/mp4", "VIDEO/QuickTime", "video/webm; codecs=vp8,opus",
                                          "audio/wav", "audio/x-m4a", "audio/mpeg"])
def test_accepted_content_types(content_type: str) -> None:
    assert check_content_type(content_type) is None


@pytest.mark.parametrize("content_type", ["image/png", "application/pdf", "text/plain", ""])
def test_rejected_content_type_lists_what_to_send(content_type: str) -> None:
    with pytest.raises(InputError) as caught:
        check_content_type(content_type)
    message = str(caught.value)
    assert message.startswith(f"unsupported content type '{content_type or '(none)'}': send one of video/mp4, ")
    assert all(accepted in message for accepted in ACCEPTED_CONTENT_TYPES)


def test_content_types_have_a_kind() -> None:
    assert set(ACCEPTED_CONTENT_TYPES.values()) == {"video", "audio"}
    assert ACCEPTED_CONTENT_TYPES["video/quicktime"] == "video"
    assert ACCEPTED_CONTENT_TYPES["audio/x-m4a"] == "audio"
