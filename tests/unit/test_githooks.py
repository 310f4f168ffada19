"""The git hooks in .githooks/, installed with their setup.sh in a throw-away repository and
exercised with real `git commit`s (no Docker needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOOKS = ROOT / ".githooks"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _ruff() -> str | None:
    beside_python = Path(sys.executable).parent / "ruff"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("ruff")


class Repo:
    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.path = path
        self.env = env

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", *args],
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )

    def write(self, name: str, text: str) -> None:
        (self.path / name).write_text(text)

    def commit(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.git("commit", *args, check=False)

    def head_subject(self) -> str:
        return self.git("log", "-1", "--format=%s").stdout.strip()

    def count(self) -> int:
        return int(self.git("rev-list", "--count", "HEAD").stdout)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    path = tmp_path / "repo"
    path.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") and k != "VIRTUAL_ENV"}
    # Nothing from the user's or the machine's git configuration.
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", LC_ALL="C.UTF-8")
    ruff = _ruff()
    if ruff is not None:  # the temporary repo has no .venv: the hook finds ruff on PATH
        env["PATH"] = f"{Path(ruff).parent}{os.pathsep}{env.get('PATH', '')}"
    r = Repo(path, env)
    r.git("init", "-q", "-b", "main")
    r.git("config", "user.name", "Hook Test")
    r.git("config", "user.email", "hooks@example.invalid")
    r.git("config", "commit.gpgsign", "false")
    shutil.copytree(HOOKS, path / ".githooks")
    out = subprocess.run(
        ["bash", ".githooks/setup.sh"],
        cwd=path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    assert "installed" in out.stdout
    r.write("pyproject.toml", '[tool.ruff]\nline-length = 100\ntarget-version = "py311"\n')
    r.git("add", "pyproject.toml", ".githooks")
    res = r.commit("-q", "-m", "Initial commit")
    assert res.returncode == 0, res.stderr
    return r


def test_setup_installs_executable_hooks(repo: Repo) -> None:
    assert repo.git("config", "core.hooksPath").stdout.strip() == ".githooks"
    for name in ("pre-commit", "commit-msg", "pre-push"):
        assert os.access(repo.path / ".githooks" / name, os.X_OK), name


def test_subject_over_72_characters_is_refused(repo: Repo) -> None:
    repo.write("notes.txt", "hello\n")
    repo.git("add", "notes.txt")
    res = repo.commit("-m", "x" * 73)
    assert res.returncode != 0
    assert "73 characters" in res.stderr
    assert repo.count() == 1
    # 72 is fine, and so is a long body.
    res = repo.commit("-m", "y" * 72, "-m", "z" * 200)
    assert res.returncode == 0, res.stderr
    assert repo.head_subject() == "y" * 72


def test_empty_subject_is_refused(repo: Repo) -> None:
    repo.write("notes.txt", "hello\n")
    repo.git("add", "notes.txt")
    # --allow-empty-message: git would accept it; the hook must not.
    res = repo.commit("--allow-empty-message", "-m", "")
    assert res.returncode != 0
    assert "no subject" in res.stderr
    # Only comments and blank lines: no subject either.
    msg = repo.path / "msg.txt"
    msg.write_text("# just a comment\n\n   \n# another\n")
    res = repo.commit("--allow-empty-message", "--cleanup=verbatim", "-F", str(msg))
    assert res.returncode != 0
    assert "no subject" in res.stderr
    assert repo.count() == 1


def test_comment_lines_are_ignored_for_the_subject(repo: Repo) -> None:
    repo.write("notes.txt", "hello\n")
    repo.git("add", "notes.txt")
    msg = repo.path / "msg.txt"
    msg.write_text("# " + "c" * 100 + "\n\nAdd notes\n\nBody.\n")
    # --cleanup=strip: as when the message comes from the editor, git drops the comments too.
    res = repo.commit("--cleanup=strip", "-F", str(msg))
    assert res.returncode == 0, res.stderr
    assert repo.head_subject() == "Add notes"


@pytest.mark.skipif(_ruff() is None, reason="ruff is not installed")
def test_python_file_with_lint_error_is_refused(repo: Repo) -> None:
    repo.write("bad.py", "import os\n\nprint('hi')\n")  # F401: os imported but unused
    repo.git("add", "bad.py")
    res = repo.commit("-m", "Add a module with an unused import")
    assert res.returncode != 0
    assert "ruff check fails on bad.py" in res.stderr
    assert "F401" in res.stderr
    assert repo.count() == 1


@pytest.mark.skipif(_ruff() is None, reason="ruff is not installed")
def test_python_file_not_formatted_is_refused(repo: Repo) -> None:
    repo.write("ugly.py", "x=1\n")
    repo.git("add", "ugly.py")
    res = repo.commit("-m", "Add an unformatted module")
    assert res.returncode != 0
    assert "ugly.py is not formatted" in res.stderr
    assert repo.count() == 1


@pytest.mark.skipif(_ruff() is None, reason="ruff is not installed")
def test_good_commit_passes(repo: Repo) -> None:
    repo.write("good.py", "import os\n\nprint(os.getcwd())\n")
    repo.git("add", "good.py")
    res = repo.commit("-m", "Add a clean module")
    assert res.returncode == 0, res.stderr
    assert repo.count() == 2
    assert repo.head_subject() == "Add a clean module"


@pytest.mark.skipif(_ruff() is None, reason="ruff is not installed")
def test_only_the_staged_content_is_checked(repo: Repo) -> None:
    repo.write("mod.py", "VALUE = 1\n")
    repo.git("add", "mod.py")
    repo.write("mod.py", "import os\nVALUE=1\n")  # unstaged, broken: not part of the commit
    res = repo.commit("-m", "Add mod")
    assert res.returncode == 0, res.stderr
    assert repo.git("show", "HEAD:mod.py").stdout == "VALUE = 1\n"


def test_commit_without_python_files_passes_without_ruff(repo: Repo) -> None:
    env = dict(repo.env, PATH="/usr/bin:/bin")  # no ruff anywhere
    repo.write("README.md", "# demo\n")
    repo.git("add", "README.md")
    res = subprocess.run(
        ["git", "commit", "-m", "Add a readme"],
        cwd=repo.path,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, res.stderr
    assert repo.count() == 2
