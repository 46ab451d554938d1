"""The documentation stays a guide that works: README's shape, its links and docs/'s, no references
to files outside the repository, and the README's Python API example runs."""
import os
import re
import subprocess
import sys
import unicodedata

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")

SETUP = "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e "
COMMANDS = [SETUP + '".[dev]" && python train.py', SETUP + '".[dev,lens,sweep]" && python -m pytest -q']


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def markdown_files():
    docs = sorted(os.path.join(DOCS, n) for n in os.listdir(DOCS) if n.endswith(".md")) if os.path.isdir(DOCS) else []
    return [README] + docs


def test_readme_is_short_and_starts_with_the_two_commands():
    text = read(README)
    lines = text.splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; keep it a guide (≤ 200), move the rest to docs/"
    assert lines[0].startswith("# "), "README.md starts with its title"
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)
    assert [lang for lang, _ in blocks[:2]] == ["bash", "bash"]
    assert [body.strip() for _, body in blocks[:2]] == COMMANDS
    # nothing but the title and blank lines before them
    before = text[:text.index("```")].splitlines()
    assert [line for line in before if line.strip()] == [lines[0]]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = heading.strip().lower()
    text = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path):
    found, seen = set(), {}
    in_code = False
    for line in read(path).splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            slug = github_anchor(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def relative_links(path):
    """(target, anchor) of every Markdown link outside code blocks that is not a URL."""
    text = re.sub(r"^```.*?^```", "", read(path), flags=re.S | re.M)
    text = re.sub(r"`[^`\n]*`", "", text)
    for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        yield file_part, anchor


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_every_relative_link_points_to_a_file_that_exists(path):
    broken = []
    for file_part, anchor in relative_links(path):
        target = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        inside = os.path.commonpath([ROOT, target]) == ROOT
        if not inside or not os.path.exists(target):
            broken.append(f"{file_part or '#' + anchor} (no such file in the repository)")
        elif anchor and target.endswith(".md") and anchor not in anchors(target):
            broken.append(f"{file_part}#{anchor} (no such heading)")
    assert not broken, f"{os.path.relpath(path, ROOT)}: broken links: {broken}"


def repository_files():
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                             cwd=ROOT, capture_output=True, check=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "runs", "__pycache__", ".pytest_cache", ".hypothesis", "build"}
        names = []
        for folder, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in skip and not d.endswith(".egg-info")]
            names += [os.path.relpath(os.path.join(folder, f), ROOT) for f in files]
    return [n for n in names if not n.startswith((".git/", ".venv/")) and os.path.isfile(os.path.join(ROOT, n))]


def test_nothing_refers_to_files_outside_the_repository():
    # spelled in pieces so that this file does not match itself
    outside = ["..", "/shared"], ["shared/", "science.md"]
    needles = ["".join(parts) for parts in outside]
    offenders = []
    for name in repository_files():
        path = os.path.join(ROOT, name)
        if os.path.getsize(path) > 5_000_000:
            continue
        with open(path, "rb") as f:
            data = f.read()
        if b"\0" in data[:8192]:  # binary
            continue
        text = data.decode("utf-8", errors="ignore")
        offenders += [f"{name}: {needle!r}" for needle in needles if needle in text]
    assert not offenders, f"references to files outside the repository: {offenders}"


def readme_api_example() -> str:
    text = read(README)
    section = text[text.index("## Python API"):]
    m = re.search(r"^```python\n(.*?)^```", section, flags=re.S | re.M)
    assert m, "README's Python API section has a ```python block"
    return m.group(1)


def test_readme_api_example_runs_on_a_fresh_run(tmp_path):
    """Train a tiny induction run where the example expects it (runs/quickstart, relative to the
    working directory), then run the example as written."""
    code = readme_api_example()
    m = re.search(r'^run_dir\s*=\s*"([^"]+)"', code, flags=re.M)
    assert m, 'the example names its run folder in one line: run_dir = "..."'
    run_dir = m.group(1)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    train = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "induction", "--set", "steps=30",
                            "--out", str(tmp_path / run_dir)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-2000:]
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"README example failed:\n{result.stderr[-3000:]}"
    assert "p(t42)" in result.stdout and "<bos>" in result.stdout, result.stdout
