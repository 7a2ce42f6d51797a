"""A manifest that is not JSON a reader can take (found by tools/fuzz_manifest.py): too deeply
nested, a number of thousands of digits, not UTF-8: a FormatError, never RecursionError or a bare
ValueError."""

import shutil

import pytest

from edgeoss.format import model_dir as fmt


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"format": ' + b"9" * 5000 + b"}", b"\xff{}", b'{"a": 1'],
                         ids=["nested 100000 deep", "5000-digit number", "not utf-8", "cut"])
def test_a_manifest_that_is_not_json_is_a_format_error(converted, tmp_path, raw):
    d = shutil.copytree(converted("tiny-s0", "q8"), tmp_path / "model")
    (d / fmt.MANIFEST).write_bytes(raw)
    with pytest.raises(fmt.FormatError, match="is not valid JSON") as err:
        fmt.ModelFiles(d)
    assert len(str(err.value)) < 400
