"""The repository cites only its own documents, and its markdown links lead somewhere.

Plain pytest, no ROS. Files are the ones git knows: tracked, plus untracked ones that are not
ignored (a new document counts before it is committed); ``shared/`` (a briefing some checkouts
carry beside the product) is not part of the product and is skipped.
"""

from pathlib import Path
import re
import subprocess

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Documents that were never part of this repository: the architecture, method and style notes
#: of the private briefing, written in capitals. Their place is docs/design.md and docs/method.md.
FOREIGN_DOC = re.compile(r'\b(?:DESIGN|METHOD|STYLE)\.md\b')
#: A markdown link or image: [text](target) or [text](target "title").
LINK = re.compile(r'!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
FENCE = re.compile(r'^(```|~~~).*?^\1[^\n]*$', re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r'`[^`\n]*`')
EXTERNAL = ('http://', 'https://', 'mailto:', 'ftp://', '#')


def _repo_files() -> list[str]:
    try:
        out = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard'],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f'git cannot list the repository files here ({exc})')
    return sorted({f for f in out.splitlines()
                   if f and not f.startswith('shared/') and (ROOT / f).is_file()})


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    if b'\0' in data:
        return None  # binary (images, archives)
    return data.decode('utf-8', errors='replace')


def _markdown_links(text: str) -> list[str]:
    """Link targets of a markdown text, outside code blocks and inline code."""
    text = FENCE.sub('', text)
    text = INLINE_CODE.sub('', text)
    return LINK.findall(text)


def _broken_links(source: Path) -> list[str]:
    """Relative link targets of the markdown file ``source`` that name no existing path."""
    broken = []
    for target in _markdown_links(source.read_text(encoding='utf-8')):
        if target.startswith(EXTERNAL):
            continue
        path = target.split('#', 1)[0].split('?', 1)[0]
        if path and not (source.parent / path).exists():
            broken.append(target)
    return broken


def test_no_citation_of_documents_outside_the_repository():
    offenders = []
    for name in _repo_files():
        text = _text(ROOT / name)
        if text is None:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            if FOREIGN_DOC.search(line):
                offenders.append(f'{name}:{lineno}: {line.strip()}')
    assert not offenders, (
        'these lines cite a document that is not in this repository; cite the section of '
        'docs/design.md or docs/method.md that says it instead:\n' + '\n'.join(offenders))


#: A citation of a section: docs/design.md "Robot contract" (the name may follow a line break).
SECTION_CITATION = re.compile(r'(docs/(?:design|method)\.md)\s+"([^"\n]+)"')


def test_cited_sections_exist():
    headings: dict[str, set[str]] = {}
    missing = []
    for name in _repo_files():
        text = _text(ROOT / name)
        if text is None:
            continue
        for doc, section in SECTION_CITATION.findall(text):
            if doc not in headings:
                path = ROOT / doc
                lines = path.read_text(encoding='utf-8').splitlines() if path.is_file() else []
                headings[doc] = {h.lstrip('#').strip() for h in lines if h.startswith('#')}
            if section not in headings[doc]:
                missing.append(f'{name}: {doc} "{section}"')
    assert not missing, 'cited sections that are not headings of the document:\n' + \
        '\n'.join(sorted(set(missing)))


def test_relative_markdown_links_point_to_existing_files():
    files = _repo_files()
    docs = [f for f in files if f == 'README.md' or re.fullmatch(r'docs/[^/]+\.md', f)]
    assert 'README.md' in docs
    broken = [f'{name}: ({target}), relative to {Path(name).parent}/'
              for name in docs for target in _broken_links(ROOT / name)]
    assert not broken, 'markdown links to files that do not exist:\n' + '\n'.join(broken)


def test_the_link_pattern_finds_links_and_skips_code():
    text = ('See [`docs/design.md`](docs/design.md) and ![frame](docs/img/x.png "a frame").\n'
            '```\n[not](a/link.md)\n```\n'
            'Inline `[x](y.md)` is code; [web](https://example.org) is external.\n')
    assert _markdown_links(text) == ['docs/design.md', 'docs/img/x.png',
                                     'https://example.org']
    assert FOREIGN_DOC.search('see ' + 'METHOD' + '.md') is not None
    assert FOREIGN_DOC.search('see docs/method.md "Outer loop"') is None


def test_a_missing_link_target_is_reported(tmp_path):
    (tmp_path / 'docs').mkdir()
    (tmp_path / 'docs' / 'here.md').write_text('x')
    page = tmp_path / 'docs' / 'page.md'
    page.write_text('[ok](here.md#part) [gone](../nowhere.md) [web](https://x.org) [top](#a)\n')
    assert _broken_links(page) == ['../nowhere.md']
