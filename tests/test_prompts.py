"""cascade.prompts.read_prompts: JSONL prompt files and their errors (file:line)."""

import json

import pytest

from cascade.errors import CascadeError
from cascade.prompts import read_prompts


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reads_rows_in_order_skipping_blank_lines(tmp_path):
    rows = [{"prompt": "def f(x):\n", "reference": "    return x\n"}, {"prompt": "class A:", "id": 7}]
    path = write(tmp_path / "p.jsonl", [json.dumps(rows[0]), "", "   ", json.dumps(rows[1])])
    assert read_prompts(path) == rows
    assert read_prompts(str(path)) == rows  # a string path works too


def test_limit_keeps_the_first_rows(tmp_path):
    path = write(tmp_path / "p.jsonl", [json.dumps({"prompt": str(i)}) for i in range(5)])
    assert [r["prompt"] for r in read_prompts(path, limit=2)] == ["0", "1"]
    assert len(read_prompts(path, limit=50)) == 5
    with pytest.raises(CascadeError, match="--limit must be at least 1, got 0"):
        read_prompts(path, limit=0)


def test_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(CascadeError, match="prompts file not found"):
        read_prompts(tmp_path / "missing.jsonl")
    bad = write(tmp_path / "bad.jsonl", [json.dumps({"prompt": "ok"}), "", "{not json"])
    with pytest.raises(CascadeError, match=r"bad\.jsonl:3: not valid JSON"):
        read_prompts(bad)
    for line in ('{"text": "no prompt"}', '{"prompt": 3}', '["prompt"]'):
        path = write(tmp_path / "field.jsonl", [line])
        with pytest.raises(CascadeError, match=r"field\.jsonl:1: .*string \"prompt\" field"):
            read_prompts(path)
    empty = write(tmp_path / "empty.jsonl", [""])
    with pytest.raises(CascadeError, match="no prompts"):
        read_prompts(empty)


def test_empty_and_whitespace_prompts_are_refused_with_file_and_line(tmp_path):
    from cascade.prompts import check_prompt, read_numbered_prompts

    for i, bad in enumerate(["", " ", "\n\t  "], 1):
        path = write(tmp_path / f"e{i}.jsonl", [json.dumps({"prompt": "ok"}), "", json.dumps({"prompt": bad})])
        with pytest.raises(CascadeError, match=rf"e{i}\.jsonl:3: empty prompt"):
            read_prompts(path)
        with pytest.raises(CascadeError, match=rf"e{i}\.jsonl:3: empty prompt"):
            read_prompts(path, limit=1)  # the whole file is checked, not only the rows kept
    path = write(tmp_path / "ok.jsonl", [json.dumps({"prompt": "a"}), "", json.dumps({"prompt": " b"})])
    assert read_numbered_prompts(path) == [(f"{path}:1", {"prompt": "a"}), (f"{path}:3", {"prompt": " b"})]
    assert check_prompt("  x") == "  x"  # leading whitespace is part of a code prompt: kept
    with pytest.raises(CascadeError, match=r"^--prompt: empty prompt: "):
        check_prompt("")
    with pytest.raises(CascadeError, match=r"^--prompt: empty prompt \(whitespace only\)"):
        check_prompt("  \n")


def test_a_file_that_is_not_utf8_is_one_clear_error(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps({"prompt": "caf\u00e9"}, ensure_ascii=False).encode("latin-1") + b"\n")
    with pytest.raises(CascadeError, match=r"latin1\.jsonl: not UTF-8 text"):
        read_prompts(path)
