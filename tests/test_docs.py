"""The documents a newcomer reads: a short README with the two commands first, links that resolve, and the
measured figures' page naming only scripts that exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_readme_is_short_and_opens_with_the_two_commands() -> None:
    assert len(README.encode()) < 12_000
    first_screen = "\n".join(README.splitlines()[:24])
    assert "make run" in first_screen and "make test" in first_screen


def test_every_link_of_the_docs_resolves() -> None:
    for doc in (ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "benchmarks" / "README.md"):
        for target in re.findall(r"\]\(([^)#:]+)\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.relative_to(ROOT)} links to {target}, which is not there"


def test_the_readme_links_the_measurements_and_they_name_existing_scripts() -> None:
    assert "benchmarks/README.md" in README
    measured = (ROOT / "benchmarks" / "README.md").read_text()
    scripts = set(re.findall(r"(?<![/\w])([a-z_]+\.(?:py|sh))", measured))  # in this folder: no path
    assert {"targets.py", "full_run.sh"} <= scripts
    for script in scripts:
        assert (ROOT / "benchmarks" / script).exists(), script
