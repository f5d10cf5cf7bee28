"""The Colab notebook runs as shipped: its cells are executed here, outside Colab, with /content moved to a
temporary folder (`!` lines go to bash, `%cd` changes folder, `{NAME}` is filled in as IPython does)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "koe_studio_colab.ipynb"


def code_cells() -> list[str]:
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def as_python(cell: str, content: Path, params: dict[str, object]) -> str:
    """The cell as plain Python: form fields set to `params`, /content moved, ! and % lines as calls."""
    out = []
    for line in cell.replace("/content", str(content)).splitlines():
        indent, body = re.match(r"(\s*)(.*)", line).groups()
        field = re.match(r"(\w+) = .*#@param", body)
        if field and field.group(1) in params:
            body = f"{field.group(1)} = {params[field.group(1)]!r}"
        elif body.startswith("!"):
            body = f"_shell(f{body[1:]!r})"
        elif body.startswith("%cd "):
            body = f"_cd(f{body[4:]!r})"
        out.append(indent + body)
    return "\n".join(out)


def run_cell(cell: str, content: Path, namespace: dict, **params: object) -> None:
    namespace.setdefault("_shell", lambda cmd: subprocess.run(["bash", "-c", cmd], check=True, timeout=120))
    namespace.setdefault("_cd", os.chdir)
    exec(compile(as_python(cell, content, params), "<notebook cell>", "exec"), namespace)  # noqa: S102


@pytest.fixture
def here():
    cwd = os.getcwd()
    yield
    os.chdir(cwd)


def test_no_placeholder_and_every_cell_is_python():
    text = NOTEBOOK.read_text(encoding="utf-8")
    assert "YOUR-ACCOUNT" not in text and "<this repository>" not in text
    for cell in code_cells():
        compile(as_python(cell, Path("/tmp/c"), {}), "<notebook cell>", "exec")


def test_cells_run_outside_colab(tmp_path, here):
    from prep.download import CHOICES

    get_code, drive, download, start = code_cells()
    content = tmp_path / "content"
    content.mkdir()
    # Cell 1 without an address and without a copy: it says what to set, it does not clone a placeholder.
    with pytest.raises(SystemExit, match="Set REPO_URL"):
        run_cell(get_code, content, {})
    # With an address: a shallow clone, then the repository's own setup script runs in it.
    origin = tmp_path / "origin"
    (origin / "scripts").mkdir(parents=True)
    (origin / "scripts" / "setup.sh").write_text("touch setup-ran\n", encoding="utf-8")
    for command in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(origin), *command], check=True)
    namespace: dict = {}
    run_cell(get_code, content, namespace, REPO_URL=f"file://{origin}")
    assert (content / "koe-studio" / "setup-ran").is_file() and Path.cwd() == content / "koe-studio"
    # Run again (a restarted runtime): the copy is reused, no second clone.
    run_cell(get_code, content, namespace, REPO_URL="")

    # Cell 2 without Drive: the Data folder is made under /content.
    run_cell(drive, content, namespace, USE_DRIVE=False)
    assert namespace["DATA"] == str(content / "koe-studio" / "Data") and Path(namespace["DATA"]).is_dir()

    # Cell 3: every choice is a download target; the command runs (against a closed port here: one clear line).
    options = re.search(r'WHAT = .*#@param (\[.*\])', download).group(1)
    assert set(json.loads(options)) <= set(CHOICES)
    os.chdir(REPO)
    (tmp_path / "config.yml").write_text(f"bert:\n  ZH: {tmp_path / 'bert-zh'}\n", encoding="utf-8")
    env = dict(os.environ, KOE_CONFIG=str(tmp_path / "config.yml"), PYTHONPATH=str(REPO))
    command = re.search(r"^!(.*pipeline\.download.*)$", download, re.M).group(1)
    command = command.replace(".venv/bin/python", sys.executable).format(WHAT="bert", MIRROR="http://127.0.0.1:9")
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=120)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 1 and len(errors) == 1, out.stderr[-2000:]
    assert "from http://127.0.0.1:9" in errors[0] and "the mirror http://127.0.0.1:9 may be down" in errors[0]
    assert "hf-mirror" not in errors[0] and "Traceback" not in out.stderr

    # Cell 4 refuses the default password, and its command line is what app.py expects.
    with pytest.raises(AssertionError, match="choose a password"):
        run_cell(start, content, dict(namespace, _shell=lambda cmd: None))
    started = []
    run_cell(start, content, dict(namespace, _shell=started.append), PASSWORD="a-long-password")
    from app import parse_args

    args = parse_args(shlex.split(started[0].split("app.py", 1)[1]))
    assert args.share and args.auth == "koe:a-long-password" and args.root == namespace["DATA"]
