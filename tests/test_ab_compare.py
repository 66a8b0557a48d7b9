"""benchmarks/ab_compare.py: each side of an A/B must import its OWN tree's k2kernels (the sixth
session once timed the new tree twice because a base process imported it), and sides alternate."""
import os
import subprocess
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SCRIPT = os.path.join(REPO, "benchmarks", "ab_compare.py")
PROBE = "import k2kernels, os\nprint('package', os.path.dirname(os.path.abspath(k2kernels.__file__)))\n"


def _git_ok():
    return subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _git_ok(), reason="needs a git checkout")
def test_each_side_imports_its_own_tree_and_sides_alternate(tmp_path):
    trees = {}
    for tag in ("base", "new"):
        out = tmp_path / tag
        subprocess.run([sys.executable, SCRIPT, "prepare", "--rev", "HEAD", "--out", str(out)], check=True)
        assert (out / "k2kernels" / "__init__.py").is_file() and (out / "csrc").is_dir()
        (out / "benchmarks" / "_ab_probe.py").write_text(PROBE)
        trees[tag] = out
    env = dict(os.environ, K2K_FORCE_REFERENCE="1")
    res = subprocess.run([sys.executable, SCRIPT, "run", "--base", str(trees["base"]), "--new", str(trees["new"]),
                          "--families", "none", "--rounds", "2", "--", "benchmarks/_ab_probe.py"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [ln.split() for ln in res.stdout.splitlines() if " package " in ln]
    assert [ln[0] for ln in lines] == ["base", "new", "base", "new"], res.stdout
    for tag, _, path in lines:
        assert path == str(trees[tag] / "k2kernels"), res.stdout


def test_prepare_refuses_a_nonempty_directory(tmp_path):
    (tmp_path / "x").write_text("keep me")
    res = subprocess.run([sys.executable, SCRIPT, "prepare", "--rev", "HEAD", "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode != 0 and "not empty" in res.stderr
    assert (tmp_path / "x").read_text() == "keep me"
