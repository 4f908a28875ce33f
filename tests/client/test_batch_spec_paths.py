"""A batch spec's files stay where they belong: its ``output`` is a file inside the spec's folder,
never through a symlink, and its ``input`` lines are split as the server and the job split
them. Pure client-side code (``batch_spec``); the CLI refusing such specs against a real server
is in test_cli.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from jupyter_osire_llm._client.batch_spec import errors_path, load_spec, write_result
from jupyter_osire_llm.errors import RequestError


def _spec(folder: Path, output: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "spec.yaml"
    spec.write_text(f"model: m\nprompts: [hi]\noutput: {json.dumps(output)}\n")
    return spec


@pytest.mark.parametrize("output", ["../stolen.jsonl", "out/../../stolen.jsonl",
                                    "{elsewhere}/stolen.jsonl", "/etc/cron.d/stolen"])
def test_an_output_outside_the_specs_folder_is_refused(tmp_path, output):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    spec = _spec(tmp_path / "project", output.format(elsewhere=elsewhere))
    with pytest.raises(RequestError) as err:
        load_spec(spec)
    assert err.value.field == "output" and "output" in err.value.message


def test_an_output_inside_the_specs_folder_is_taken_absolute_or_not(tmp_path):
    folder = tmp_path / "project"
    (folder / "out").mkdir(parents=True)
    assert load_spec(_spec(folder, "out/a.jsonl")).output == folder / "out" / "a.jsonl"
    inside = str(folder / "b.jsonl")
    assert load_spec(_spec(folder, inside)).output == Path(inside)


@pytest.mark.parametrize("planted", ["answers.jsonl", "answers.errors.jsonl"])
def test_a_symlinked_output_is_refused_and_its_target_untouched(tmp_path, planted):
    target = tmp_path / "victim"
    target.write_text("precious\n")
    folder = tmp_path / "project"
    spec = _spec(folder, "answers.jsonl")
    (folder / planted).symlink_to(target)
    with pytest.raises(RequestError) as err:
        load_spec(spec)
    assert err.value.field == "output" and "symlink" in err.value.message
    assert target.read_text() == "precious\n"


def test_a_symlinked_folder_leading_outside_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "out").symlink_to(outside)
    with pytest.raises(RequestError) as err:
        load_spec(_spec(folder, "out/answers.jsonl"))
    assert err.value.field == "output"


def test_a_symlink_planted_after_the_check_is_not_followed_when_results_are_written(tmp_path):
    """What ``save_results`` does when the batch ends: a symlink put there while it ran."""
    target = tmp_path / "victim"
    target.write_text("precious\n")
    output = load_spec(_spec(tmp_path / "project", "answers.jsonl")).output
    assert output is not None
    output.symlink_to(target)
    with pytest.raises(RequestError) as err:
        write_result(output, b'{"answer": 1}\n')
    assert err.value.field == "output" and "symlink" in err.value.message
    assert target.read_text() == "precious\n"
    write_result(errors_path(output), b"{}\n")          # a plain file is written, 0600
    assert errors_path(output).read_bytes() == b"{}\n"
    assert errors_path(output).stat().st_mode & 0o777 == 0o600


def test_input_lines_split_at_newlines_only(tmp_path):
    """U+2028 inside a string and a bare CR between JSON tokens are inside the line, as the
    server's check and the job's runner see them (str.splitlines split both)."""
    folder = tmp_path / "project"
    folder.mkdir()
    lines = ['{"custom_id": "a",\r"method": "POST", "url": "/v1/chat/completions", '
             '"body": {"messages": [{"role": "user", "content": "one\u2028two"}]}}',
             '{"custom_id": "b", "method": "POST", "url": "/v1/chat/completions", '
             '"body": {"messages": [{"role": "user", "content": "three\u2029\u0085four"}]}}']
    (folder / "in.jsonl").write_bytes(("\r\n".join(lines) + "\n").encode())
    (folder / "spec.yaml").write_text("model: m\ninput: in.jsonl\n")
    spec = load_spec(folder / "spec.yaml")
    assert [line["custom_id"] for line in spec.lines] == ["a", "b"]
    assert spec.lines[0]["body"]["messages"][0]["content"] == "one\u2028two"
    assert spec.lines[1]["body"]["messages"][0]["content"] == "three\u2029\u0085four"
    assert len(spec.jsonl().splitlines()) == 2              # what is uploaded: two lines
