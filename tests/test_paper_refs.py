"""docs/paper.md is the one place the code's protocol references point to: every `§X` that code, configs, tests,
scripts or docs cite (as `docs/paper.md §X`) is a section of it, and nothing cites the paper notes that used to sit
outside the repository."""
import re

from conftest import REPO

PAPER = REPO / "docs" / "paper.md"
# "docs/paper.md §B.1, §B.3, §B.4", "docs/paper.md §C.3-C.4", "(docs/paper.md) §A.5 [NB]": the § labels after the
# file name
CITED = re.compile(r"(?:PAPER|paper)\.md\)?((?:[ ,;/]+(?:and )?§[0-9A-G][0-9A-G.\-]*)+)")


def sections() -> set[str]:
    """The labels of docs/paper.md's headings: "## A. ..." -> A, "### B.3 ..." -> B.3."""
    return {m.group(1) for m in re.finditer(r"^#{2,3} ([0-9A-G](?:\.[0-9]+)?)[. ]", PAPER.read_text(), re.M)}


def cited_labels(text: str) -> set[str]:
    labels = set()
    for match in CITED.finditer(text):
        for token in re.findall(r"§([0-9A-G][0-9A-G.\-]*)", match.group(1)):
            start, _, end = token.rstrip(".-").partition("-")      # a range: both of its ends
            labels.add(start)
            if end:
                labels.add(end if "." in end else f"{start.split('.')[0]}.{end}")
    return labels


def citations() -> dict[str, set[str]]:
    """label -> the files citing it, over the repository's own text (records and generated tables excluded)."""
    found: dict[str, set[str]] = {}
    paths = [p for folder in ("beft", "conf", "tests", "scripts", "docs") for p in (REPO / folder).rglob("*")
             if p.suffix in (".py", ".yaml", ".md") and p.is_file()]
    for path in [*paths, *(REPO / name for name in ("README.md", "Makefile") if (REPO / name).is_file())]:
        for label in cited_labels(path.read_text()):
            found.setdefault(label, set()).add(str(path.relative_to(REPO)))
    return found


def test_the_parser_finds_sections_and_citations():
    assert {"0.2", "A", "A.3", "B.2", "C", "C.9", "D.1", "E.2", "F.6"} <= sections()
    assert cited_labels("(docs/paper.md §B.1, §B.3, §B.4, BERT-base)") == {"B.1", "B.3", "B.4"}
    assert cited_labels("docs/paper.md §C.3-C.4; docs/paper.md §B.2 / G2") == {"C.3", "C.4", "B.2"}
    assert cited_labels("docs/paper.md §B.1-B.4 and §D.") == {"B.1", "B.4", "D"}
    assert {"A.3", "B.3", "C.9"} <= set(citations())        # conf/method/beft.yaml, conf/task/*.yaml, beft/decoder


def test_every_cited_section_exists_in_docs_paper_md():
    missing = {label: sorted(files)[:3] for label, files in citations().items() if label not in sections()}
    assert not missing, f"cited but not a section of docs/paper.md: {missing}"


# The old notes file, upper case and not under docs/ (spelled in two pieces so this file does not cite it).
OLD_NOTES = re.compile(r"(?<![/\w])" + "PAPER" + r"\.md")


def test_no_reference_points_outside_the_repository():
    """Code, configs, scripts, tests, docs and the hand-kept paper numbers cite docs/paper.md, not the notes file
    that sat beside the checkout (a clone has no such file)."""
    roots = [REPO / f for f in ("beft", "conf", "tests", "scripts", "docs", "hydra_plugins", "results/paper")]
    paths = [p for root in roots for p in root.rglob("*") if p.suffix in (".py", ".yaml", ".md", ".csv", ".sh")]
    paths += [REPO / name for name in ("README.md", "Makefile", "CITATION.cff") if (REPO / name).is_file()]
    stale = sorted(str(p.relative_to(REPO)) for p in paths if p.is_file() and OLD_NOTES.search(p.read_text()))
    assert not stale, f"these cite the old notes file; cite docs/paper.md §X instead: {stale}"
    assert OLD_NOTES.search("see " + "PAPER" + ".md §A.3") and not OLD_NOTES.search("see docs/paper.md §A.3")
