"""The README's and docs' relative links resolve (file and heading), and every repository path they name exists."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks/results/README.md"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# A repository path: a top-level folder of the project, then a file name with an extension.
PATH = re.compile(r"(?<![\w/.-])((?:rmix_jax|configs|benchmarks|tests|notebooks|docs)/[\w./-]*\.(?:py|yaml|md|ipynb|json|png|gif|toml))(?![\w{*<])")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        match = re.match(r"^#{1,6}\s+(.*)$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            out.add(base if count == 0 else f"{base}-{count}")
    return out


def test_slug_matches_github_on_known_headings():
    assert slug("TD(lambda) targets (H100)") == "tdlambda-targets-h100"
    assert slug("RMIX on MACN 7x4: `make train` with the standardized scores") == \
        "rmix-on-macn-7x4-make-train-with-the-standardized-scores"
    assert slug("The paper's Table 1 ablation on MACN 7x4, 8 seeds per arm") == \
        "the-papers-table-1-ablation-on-macn-7x4-8-seeds-per-arm"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    text = FENCE.sub("", page.read_text())
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_paths_exist(page):
    missing = sorted({p for p in PATH.findall(page.read_text()) if not (ROOT / p).exists()})
    assert not missing, f"{page.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_results_index_names_existing_files():
    index = ROOT / "benchmarks/results/README.md"
    names = set(re.findall(r"`([\w.-]+\.(?:json|png))`", index.read_text()))
    missing = sorted(n for n in names if not (index.parent / n).exists())
    assert not missing, f"benchmarks/results/README.md names files that are not there: {missing}"


def test_readme_is_short():
    assert (ROOT / "README.md").stat().st_size < 12 * 1024
