"""Checks that BUILD has a target for every module, program and test."""

import ast
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tools"))

import build_targets  # noqa: E402  (a script in tools/, not a package)


def parse_build():
    """Returns {name: {"kind", "srcs", "deps", "main"}} from BUILD's rule calls."""
    tree = ast.parse((REPO_ROOT / "BUILD").read_text(), "BUILD")
    targets = {}
    for statement in tree.body:
        if not isinstance(statement, ast.Expr) or not isinstance(statement.value, ast.Call):
            continue
        call = statement.value
        kind = call.func.id
        if kind not in ("py_library", "py_binary", "py_test"):
            continue
        fields = {keyword.arg: keyword.value for keyword in call.keywords}
        name = ast.literal_eval(fields["name"])
        srcs = ast.literal_eval(fields["srcs"])
        deps = [ast.unparse(d) if isinstance(d, ast.Call) else ast.literal_eval(d)
                for d in fields.get("deps", ast.List(elts=[])).elts]
        main = ast.literal_eval(fields["main"]) if "main" in fields else None
        assert name not in targets, f"duplicate target {name}"
        targets[name] = {"kind": kind, "srcs": srcs, "deps": deps, "main": main}
    return targets


@pytest.fixture(scope="module")
def targets():
    return parse_build()


def sources_of(targets, kind):
    return {src: name for name, t in targets.items() if t["kind"] == kind for src in t["srcs"]}


def test_every_module_has_library(targets):
    libraries = sources_of(targets, "py_library")
    for path in (REPO_ROOT / "dropnas_tf").rglob("*.py"):
        relative = str(path.relative_to(REPO_ROOT))
        assert relative in libraries, f"{relative} has no py_library in BUILD"


def test_every_program_has_binary(targets):
    mains = {t["main"] for t in targets.values() if t["kind"] == "py_binary"}
    programs = [p for p in (REPO_ROOT / "dropnas_tf").rglob("*.py")
                if build_targets.runs_as_program(p.relative_to(REPO_ROOT))]
    programs += list((REPO_ROOT / "tools").glob("*.py"))
    assert programs
    for path in programs:
        relative = str(path.relative_to(REPO_ROOT))
        assert relative in mains, f"{relative} runs as a program but has no py_binary"


def test_every_test_has_py_test(targets):
    tests = sources_of(targets, "py_test")
    for path in (REPO_ROOT / "tests").glob("test_*.py"):
        relative = str(path.relative_to(REPO_ROOT))
        assert relative in tests, f"{relative} has no py_test in BUILD"


def test_listed_files_exist(targets):
    for name, target in targets.items():
        for path in target["srcs"] + ([target["main"]] if target["main"] else []):
            assert (REPO_ROOT / path).is_file(), f"target {name} lists missing file {path}"


def test_deps_match_imports(targets):
    module_to_target = {}
    for name, target in targets.items():
        if target["kind"] == "py_library":
            for src in target["srcs"]:
                module_to_target[build_targets.module_name(pathlib.Path(src))] = ":" + name
    for name, target in targets.items():
        for src in target["srcs"]:
            project, third_party = build_targets.imports_of(pathlib.Path(src))
            for module in project:
                while module not in module_to_target:
                    module = module.rpartition(".")[0]
                    assert module, f"{src} imports a project module with no library"
                dep = module_to_target[module]
                if src not in targets[dep[1:]]["srcs"]:
                    assert dep in target["deps"], \
                        f"target {name} imports {module} but lacks dep {dep}"
            for package in third_party:
                requirement = f"requirement('{build_targets.THIRD_PARTY[package]}')"
                assert requirement in target["deps"], \
                    f"target {name} imports {package} but lacks {requirement}"
        for dep in target["deps"]:
            if dep.startswith(":"):
                assert dep[1:] in targets, f"target {name} depends on unknown {dep}"


def test_build_is_up_to_date():
    result = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "build_targets.py"),
                             "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
