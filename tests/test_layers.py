"""The package's layers hold: no import runs upward across them and none forms a circle.

The contracts are in pyproject.toml ([tool.importlinter]); `lint-imports` checks them. The
planted imports below show the check fails when a layer is crossed or a circle appears.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", str(root / "pyproject.toml")], cwd=root,
                          env=env, capture_output=True, text=True, timeout=120)


def test_the_layer_contracts_are_kept():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, planted, broken, named", [
    ("io/trec.py", "from ..reasoning import store", "layers: front ends", "rank1_cli.io.trec -> rank1_cli.reasoning.store"),
    ("evaluation/measures.py", "from .. import engines", "layers: front ends", "rank1_cli.evaluation.measures -> rank1_cli.engines"),
    ("reasoning/prompts.py", "from . import store", "the rank1 facts are pure", "rank1_cli.reasoning.prompts -> rank1_cli.reasoning.store"),
    ("reasoning/store.py", "from . import scorer", "inside the reasoning core", "rank1_cli.reasoning.store -> rank1_cli.reasoning.scorer"),
    ("engines/vllm_replicas.py", "from . import vllm_engine", "no circles among the modules", ".vllm_replicas -> .vllm_engine"),
])
def test_an_upward_import_or_a_circle_breaks_a_contract(tmp_path, module, planted, broken, named):
    shutil.copytree(REPO / "rank1_cli", tmp_path / "rank1_cli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    source = tmp_path / "rank1_cli" / module
    source.write_text(source.read_text().replace("from __future__ import annotations\n",
                                                 f"from __future__ import annotations\n\n{planted}\n", 1))
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    _, _, report = result.stdout.partition("Broken contracts")
    assert report.strip("-\n").startswith(broken), result.stdout
    assert named in report, result.stdout
