"""The documentation works: every ```python snippet of README.md and docs/*.md runs, and every
relative link points at a file of the repository (and a heading that exists, when it names one)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# the folder the README's set-up command writes, at tiny sizes: snippets find it at out/selectivbench
TINY_FOLDER = dict(vocab_size=9, ambiguities=4, ambiguity_depth=4, seq_len=30, num_train=64, num_validation=16,
                   num_test=16)


def fenced_blocks(page: Path) -> list[tuple[str, str, int]]:
    """(tag, code, line of the opening fence) of every fenced block."""
    text = page.read_text()
    return [(m.group(1).strip(), m.group(2), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


SNIPPETS = [pytest.param(code, id=f"{page.relative_to(ROOT)}:{line}")
            for page in PAGES for tag, code, line in fenced_blocks(page) if tag == "python"]


@pytest.fixture(scope="module")
def built_folder(tmp_path_factory):
    from selectivbench.hub.dataset_folder import generate_folder

    out = tmp_path_factory.mktemp("docs-data") / "selectivbench"
    generate_folder(["complexity", "gapped"], out, **TINY_FOLDER)
    return out


def test_every_python_fence_is_collected_and_the_readme_has_some():
    opened = sum(page.read_text().count("```python\n") for page in PAGES)
    assert len(SNIPPETS) == opened > 0
    assert any(p.id.startswith("README.md:") for p in SNIPPETS)


@pytest.mark.parametrize("code", SNIPPETS)
def test_snippet_runs(code, built_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever a snippet writes lands here
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "selectivbench").symlink_to(built_folder, target_is_directory=True)
    exec(compile(code, "<snippet>", "exec"), {"__name__": "__snippet__"})  # a fresh namespace each


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as '-'."""
    text = FENCE.sub("", page.read_text())
    titles = re.findall(r"^#{1,6}\s+(.*?)\s*$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", t.lower()).replace(" ", "-") for t in titles}


def relative_links(page: Path) -> list[str]:
    prose = re.sub(r"`[^`\n]*`", "", FENCE.sub("", page.read_text()))  # links inside code are not links
    return [t for t in LINK.findall(prose) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def broken_links(page: Path) -> list[str]:
    """Relative links of `page` to no file, to a file outside the repository, or to no heading."""
    broken = []
    for link in relative_links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.is_relative_to(ROOT) or not target.exists():
            broken.append(link)
        elif anchor and target.suffix == ".md" and anchor not in heading_anchors(target):
            broken.append(link)
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files_of_the_repository(page):
    assert broken_links(page) == []
    if page.name == "README.md":
        assert len(relative_links(page)) >= 10  # its links section was read


def test_the_link_check_catches_a_missing_file_an_outside_path_and_a_missing_heading(monkeypatch):
    page = ROOT / "docs" / "spec.md"
    fake = ("[a](nothing-here.md) [b](../../outside.md) [c](models.md#no-such-heading) [d](models.md) "
            "[e](design-decisions.md#speed) [f](https://x.org) `[g](in-code.md)` [h](#1-grammar)")
    real_read_text = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: fake if self == page else real_read_text(self, *a, **k))
    assert relative_links(page) == ["nothing-here.md", "../../outside.md", "models.md#no-such-heading", "models.md",
                                    "design-decisions.md#speed", "#1-grammar"]
    assert broken_links(page) == ["nothing-here.md", "../../outside.md", "models.md#no-such-heading",
                                  "#1-grammar"]  # the fake page has no headings


def test_no_code_or_test_reads_outside_the_repository():
    outside = re.compile("|".join([r"\.\./" + "shared", "/" + "work/", r"parents\[1\]\.parent"]))
    files = [f for folder in ("src", "builders", "models", "scripts", "tests", ".ci")
             for f in sorted((ROOT / folder).rglob("*")) if f.suffix in (".py", ".sh", ".md", "") and f.is_file()]
    assert len(files) > 20
    hits = [f"{f.relative_to(ROOT)}:{n}" for f in files for n, line in enumerate(f.read_text().splitlines(), 1)
            if outside.search(line)]
    assert hits == []


def test_the_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def named_tests(page: Path) -> list[tuple[str, str]]:
    """(test file, test name) of every `tests/FILE.py::NAME` a page names; `::NAME` right after one
    names another test of the same file."""
    found, current = [], None
    for file, name in re.findall(r"`(tests/[\w/]+\.py)?::(\w+)`", page.read_text()):
        current = file or current
        found.append((current, name))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_test_a_page_names_exists(page):
    """A promise in the README names the test that backs it: a renamed or deleted test breaks this."""
    import ast

    for file, name in named_tests(page):
        assert file is not None and (ROOT / file).is_file(), f"{page.name} names {file}::{name}"
        defined = {n.name for n in ast.walk(ast.parse((ROOT / file).read_text())) if isinstance(n, ast.FunctionDef)}
        assert name in defined, f"{page.name} names {file}::{name}, which is not a test there"


def test_the_named_test_check_reads_continuations_and_catches_a_missing_test(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("`tests/test_docs.py::test_snippet_runs`, `::no_such_test`\n")
    assert named_tests(page) == [("tests/test_docs.py", "test_snippet_runs"), ("tests/test_docs.py", "no_such_test")]
    with pytest.raises(AssertionError, match="no_such_test"):
        test_every_test_a_page_names_exists(page)
