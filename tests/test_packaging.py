"""What minitf makes importable, and that none of it shadows another installed package.

The Triton kernels live in the top-level folder ``kernels/`` but import as ``minitf_kernels``
(pyproject's ``package-dir``): Hugging Face's ``kernels`` package (a dependency of
transformers >= 5, so of the ``lens`` extra) owns the name ``kernels``, and a regular package of
ours under that name, first on ``sys.path`` from the repository root, broke
``import transformer_lens``. The folder has no ``__init__.py``, so from the repository root it is
at most a namespace portion, which any regular package of the same name wins over.
"""
import importlib.util
import subprocess
import sys
import textwrap
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]

# A tiny attention call through the kernel in Triton's interpreter, checked against torch.
KERNEL_RUNS = textwrap.dedent("""
    import os, torch
    os.environ["TRITON_INTERPRET"] = "1"
    from minitf_kernels.flash_attention import flash_attention
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 16, 16) for _ in range(3))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    err = (flash_attention(q, k, v, causal=True) - ref).abs().max().item()
    assert err < 1e-4, err
    import minitf_kernels
    print("KERNEL_OK", err)
""")


def _run(code, cwd, env=None):
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _shipped_top_level():
    """Top-level import names an install of minitf creates."""
    return {name.split(".")[0] for name in SETUPTOOLS["packages"]}


def test_package_list_names_every_package_folder():
    """pyproject lists packages explicitly (the kernels mapping needs it): a new subpackage of
    minitf or toy_tasks that is not listed would be missing from a wheel."""
    listed = set(SETUPTOOLS["packages"])
    for top in ("minitf", "toy_tasks"):
        for init in (ROOT / top).rglob("__init__.py"):
            name = ".".join(init.parent.relative_to(ROOT).parts)
            assert name in listed, f"{name} is a package folder missing from pyproject's packages"
    assert SETUPTOOLS["package-dir"] == {"minitf_kernels": "kernels"}
    assert not (ROOT / "kernels" / "__init__.py").exists(), \
        "kernels/__init__.py would make the folder a regular package named `kernels` again"


def test_no_importable_name_collides_with_an_installed_package():
    """Every name minitf installs, and every name importable from the repository root or from
    tests/ (pytest puts it on sys.path), is owned by no other installed distribution. In CI every
    extra is installed ([dev,lens,sweep]), so this checks what a fresh install pulls in."""
    owners = packages_distributions()
    names = set(_shipped_top_level())
    # from the repository root: regular packages (folders with __init__.py) and modules
    names |= {p.parent.name for p in ROOT.glob("*/__init__.py")}
    names |= {p.stem for p in ROOT.glob("*.py")}
    names |= {p.stem for p in (ROOT / "tests").glob("*.py")}
    clashes = {n: [d for d in owners[n] if d != "minitf"] for n in names if n in owners}
    clashes = {n: d for n, d in clashes.items() if d}
    assert not clashes, f"minitf's importable names shadow installed packages: {clashes}"
    assert "kernels" not in names


def test_third_party_kernels_wins_from_the_repo_root(tmp_path):
    """Without Hugging Face's package: a stand-in regular package named ``kernels``, placed *after*
    the repository root on sys.path, is what ``import kernels`` gives from the root."""
    fake = tmp_path / "site" / "kernels"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("THIRD_PARTY = True\n")
    code = ("import sys; sys.path.insert(1, %r)\n" % str(tmp_path / "site")
            + "import kernels; assert getattr(kernels, 'THIRD_PARTY', False), kernels.__path__\n"
            + KERNEL_RUNS)
    out = _run(code, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "KERNEL_OK" in out.stdout


@pytest.mark.skipif(importlib.util.find_spec("transformer_lens") is None,
                    reason="the lens extra (TransformerLens, and with it Hugging Face's kernels) "
                           "is not installed; CI installs it")
def test_transformer_lens_and_hf_kernels_import_from_the_repo_root():
    code = ("import transformer_lens, kernels, os\n"
            f"assert not os.path.abspath(kernels.__file__ or '').startswith({str(ROOT / 'kernels')!r})\n"
            "assert hasattr(kernels, 'get_kernel'), dir(kernels)\n" + KERNEL_RUNS)
    out = _run(code, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "KERNEL_OK" in out.stdout


@pytest.mark.slow
def test_wheel_install_keeps_both_packages(tmp_path):
    """``pip install .`` into a fresh venv (dependencies reached through a .pth to this venv's
    site-packages, so nothing is downloaded): the wheel holds ``minitf_kernels`` and no
    ``kernels``; from another folder both the kernel and the third-party ``kernels`` import."""
    import sysconfig
    import zipfile
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "deps.pth").write_text(ours + "\n")
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(wheels), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(wheels.glob("minitf-*.whl"))
    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert "minitf_kernels" in tops and "kernels" not in tops, tops
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", purelib,
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-3000:]
    code = ("import minitf, minitf_kernels, os\n"
            f"assert minitf.__file__.startswith({purelib!r}), minitf.__file__\n" + KERNEL_RUNS)
    if importlib.util.find_spec("kernels") is not None:
        code = "import kernels; assert hasattr(kernels, 'get_kernel')\n" + code
    out = subprocess.run([str(py), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "KERNEL_OK" in out.stdout
