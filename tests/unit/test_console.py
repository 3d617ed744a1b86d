"""The console's traceback: it starts at the user's statement, whatever ran it."""

from __future__ import annotations

from megatrio.cli._console import format_user_traceback


def _raised_through_machinery(source: str) -> BaseException:
    statement = compile(source, "<console>", "exec")

    def some_machinery() -> None:
        exec(statement, {})

    try:
        some_machinery()
    except Exception as exc:
        return exc
    raise AssertionError("the statement did not raise")


def test_frames_before_the_statement_are_left_out_whoever_owns_them() -> None:
    error = _raised_through_machinery("def f():\n    raise ValueError('x')\n\nf()\n")
    assert format_user_traceback(error, "<console>") == (
        "Traceback (most recent call last):\n"
        '  File "<console>", line 4, in <module>\n'
        '  File "<console>", line 2, in f\n'
        "ValueError: x\n"
    )


def test_a_chained_exception_keeps_its_own_frames() -> None:
    source = (
        "def inner():\n    raise KeyError('k')\n\n"
        "try:\n    inner()\nexcept KeyError as exc:\n    raise RuntimeError('outer') from exc\n"
    )
    text = format_user_traceback(_raised_through_machinery(source), "<console>")
    assert '  File "<console>", line 2, in inner\n' in text
    assert "The above exception was the direct cause" in text
    assert "some_machinery" not in text
    assert text.endswith("RuntimeError: outer\n")
