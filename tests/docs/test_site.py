"""The site builds with --strict and its links hold on a fresh clone: nothing links into
../shared (a clone has none), and the README's links into docs/ exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\((?P<target>[^)#\s]+)(?:#[^)]*)?\)")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_link_into_shared(page: Path):
    text = page.read_text(encoding="utf-8")
    assert "../shared" not in text, f"{page.name} links or points into ../shared"


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [m["target"] for m in LINK.finditer(text) if "://" not in m["target"]]
    assert any(t.startswith("docs/") for t in targets), "the README links into docs/"
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_mkdocs_build_strict(tmp_path):
    """`make docs` in CI: no broken link, nav entry or API reference."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


def test_cli_reference_lists_every_option():
    """docs/reference/cli.md has a section per `mltrade` subcommand naming each of its options."""
    import typer

    from mltrade.cli import app

    text = (ROOT / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    heading = r"^### `(mltrade [^`]+)`\n(.*?)(?=^### |^## |\Z)"
    sections = dict(re.findall(heading, text, re.M | re.S))
    missing = []

    def walk(command, path: list[str]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, [*path, name])
            return
        name = " ".join(["mltrade", *path])
        section = sections.get(name)
        if section is None:
            missing.append(name)
            return
        for param in command.params:
            is_option = param.param_type_name == "option"
            names = param.opts if is_option else [param.name.upper()]
            if not any(f"`{n}`" in section for n in names):
                missing.append(f"{name} {names[0]}")

    walk(typer.main.get_command(app), [])
    assert not missing, f"docs/reference/cli.md does not document: {missing}"
