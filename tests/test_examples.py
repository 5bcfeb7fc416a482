"""Every example script runs at its tiny size, and every ```python block of README.md and
of docs/*.md runs as written (each declares its own small stand-ins for data)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    (path.relative_to(ROOT).as_posix(), block)
    for path in DOCS
    for block in re.findall(r"```python\n(.*?)```", path.read_text(), re.S)
]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )


def test_examples_exist() -> None:
    names = {path.name for path in EXAMPLES}
    assert {"sgd_loop.py", "mbt_nag_loop.py", "search_custom_loss.py", "rosenbrock.py"} <= names


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda path: path.name)
def test_example_runs_tiny(script: Path) -> None:
    if "lightning" in script.read_text() and importlib.util.find_spec("lightning") is None:
        pytest.skip('lightning is not installed (pip install "bgd-experiments[lightning]")')
    done = _run([str(script), "--tiny"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip()


def test_mbt_nag_loop_is_a_small_diff_from_the_sgd_loop() -> None:
    sgd = (ROOT / "examples/sgd_loop.py").read_text().split('"""')[2].splitlines()
    mbt = (ROOT / "examples/mbt_nag_loop.py").read_text().split('"""')[2].splitlines()
    import difflib

    changed = [
        line
        for line in difflib.unified_diff(sgd, mbt, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---")) and line[1:].strip()
    ]
    assert len(changed) <= 8, changed


def test_readme_and_docs_have_python_blocks() -> None:
    files = {name for name, _ in BLOCKS}
    assert {"README.md", "docs/mbt-in-your-code.md"} <= files


@pytest.mark.parametrize(
    "name, block", BLOCKS, ids=[f"{name}-{i}" for i, (name, _) in enumerate(BLOCKS)]
)
def test_doc_block_runs_as_written(name: str, block: str, tmp_path: Path) -> None:
    script = tmp_path / "block.py"
    script.write_text(block)
    done = _run([str(script)])
    assert done.returncode == 0, f"{name}:\n{block}\n{done.stderr[-3000:]}"


def test_optim_and_linesearch_import_only_torch() -> None:
    code = (
        "import sys, bgd_experiments.optim, bgd_experiments.linesearch\n"
        "heavy = {'hydra', 'omegaconf', 'lightning', 'pytorch_lightning', 'matplotlib'}\n"
        "print(sorted(heavy & {name.split('.')[0] for name in sys.modules}))\n"
    )
    done = _run(["-c", code])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


def test_optim_and_linesearch_add_no_module_beyond_torch_and_the_standard_library() -> None:
    """After ``import torch`` (which loads numpy itself), importing both packages adds no
    top-level module outside the standard library but ``bgd_experiments``."""
    code = (
        "import sys, torch\n"
        "def top():\n"
        "    return {name.split('.')[0] for name in sys.modules} - set(sys.stdlib_module_names)\n"
        "before = top()\n"
        "import bgd_experiments.optim, bgd_experiments.linesearch\n"
        "print(sorted(top() - before))\n"
    )
    done = _run(["-c", code])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "['bgd_experiments']"


def test_relative_links_of_the_readme_and_docs_resolve() -> None:
    broken = [
        f"{path.relative_to(ROOT)}: {target}"
        for path in DOCS
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", path.read_text())
        if not target.startswith(("http://", "https://")) and not (path.parent / target).exists()
    ]
    assert not broken
