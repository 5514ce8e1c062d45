"""Line-level code-completion metrics and the degeneration signal (cascade/bench/completion.py)."""

import math

import pytest

from cascade.bench import completion as C


def test_exact_match_compares_the_first_non_blank_lines_stripped():
    assert C.exact_match("\n    return x + 1\n    y", "\n    return x + 1\n") == 1.0
    assert C.exact_match("return x+1\n", "return x + 1\n") == 0.0
    assert C.exact_match("", "x = 1\n") == 0.0


def test_edit_similarity_is_normalised_levenshtein():
    assert C.edit_similarity("abcd\n", "abcd\n") == 100.0
    assert C.edit_similarity("abcx\n", "abcd\n") == pytest.approx(75.0)
    assert C.edit_similarity("", "abcd\n") == 0.0
    # over several lines a right first line followed by nonsense scores lower than the right block
    ref = "a = 1\nb = 2\nc = 3\n"
    assert C.edit_similarity("a = 1\nzzzzz\nqqqqq\n", ref, 3) < C.edit_similarity(ref, ref, 3) == 100.0
    assert C.edit_similarity("a = 1\nzzzzz\nqqqqq\n", ref, 1) == 100.0


@pytest.mark.parametrize(
    "code,status",
    [
        ("x = 1\n", "ok"),
        ("def f(x):\n", "incomplete"),  # the body would come next
        ("x = f(1,\n", "incomplete"),  # an open bracket
        ('s = """doc\n', "incomplete"),  # an open string
        ("x = = 1\n", "error"),
        ("if x:\ny = 1\n", "error"),  # a missing indent mid-text is not "incomplete"
        ("def f(:\n    pass\n", "error"),
    ],
)
def test_syntax_status(code, status):
    assert C.syntax_status(code) == status


def test_parses_cuts_the_partial_last_line_and_encloses_an_indented_window():
    window = "        x = compute(a)\n        return x\n"  # cut from inside a method
    assert C.parses(window, "\n    def other(self):\n        return 1\n")  # a dedent to the class level
    assert C.parses(window, "\ndef top():\n    pass\nthis line is cut off (")  # partial last line dropped
    assert not C.parses(window, "\n    def other(self)\n        return 1\n")  # missing colon


def test_degeneration_signal():
    loop = "self.assertEqual(f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f"
    varied = "def area(w, h):\n    return w * h\n"
    assert C.repeated_ngram_rate(loop, 4) > 0.8 > C.repeated_ngram_rate(varied, 4) == 0.0
    assert C.distinct_n(loop, 2) < 0.3 < C.distinct_n(varied, 2) == 1.0
    assert math.isnan(C.distinct_n("x", 2)) and math.isnan(C.repeated_ngram_rate("a b", 4))
    assert C.code_tokens('x = "a b" == 2') == ["x", "=", '"a b"', "==", "2"]


def test_score_without_reference_keeps_the_reference_free_metrics():
    s = C.score("def f(x):\n", "    return x\n", None)
    assert s.exact_match is None and s.edit_similarity is None and s.parses == 1.0
    assert {k for k, v in s.as_dict().items() if v is not None} == {"parses", "distinct_2", "repeat_4"}
    full = C.score("def f(x):\n", "    return x\n", "    return x\n")
    assert {k for k, v in full.as_dict().items() if v is not None} == set(C.METRICS)
    assert full.exact_match == 1.0 and full.edit_similarity == 100.0
