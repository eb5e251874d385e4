"""Unit tests for devrun.watch.patterns.Matcher: gitignore-style watch and ignore lists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devrun.watch.patterns import BUILTIN_IGNORES, Matcher

ROOT = Path("/srv/project")


def matcher(watch: list[str] | None = None, ignore: list[str] | None = None, root: Path = ROOT) -> Matcher:
    """A Matcher that never reads .gitignore files (pure: ROOT does not exist on disk)."""
    return Matcher(root, ["**/*.py"] if watch is None else watch, ignore or [], respect_gitignore=False)


def under(rel: str, root: Path = ROOT) -> str:
    return str(root / rel)


# -- watch -------------------------------------------------------------------------------


@pytest.mark.parametrize("rel", ["app.py", "pkg/views.py", "a/b/c/d/deep.py", "pkg/__init__.py", "tests/test_x.py"])
def test_default_python_glob_matches_root_level_and_nested_files(rel: str) -> None:
    assert matcher().matches(under(rel)) is True


@pytest.mark.parametrize("rel", ["app.pyi", "README.md", "pkg/data.json", "app.py.bak", "pyproject.toml", "py"])
def test_default_python_glob_does_not_match_other_files(rel: str) -> None:
    assert matcher().matches(under(rel)) is False


def test_accepts_path_objects_and_strings() -> None:
    m = matcher()
    assert m.matches(ROOT / "app.py") is True
    assert m.matches(str(ROOT / "app.py")) is True


def test_several_watch_globs() -> None:
    m = matcher(["**/*.py", "templates/**", "*.toml"])
    assert m.matches(under("templates/base.html")) is True
    assert m.matches(under("templates/emails/welcome.txt")) is True
    assert m.matches(under("pyproject.toml")) is True
    assert m.matches(under("sub/settings.toml")) is True  # no slash: any depth, as in gitignore
    assert m.matches(under("static/site.css")) is False
    assert m.matches(under("other/templates.html")) is False


def test_anchored_watch_glob_only_matches_at_the_root() -> None:
    m = matcher(["/settings.py"])
    assert m.matches(under("settings.py")) is True
    assert m.matches(under("pkg/settings.py")) is False


def test_negation_in_watch_excludes_files() -> None:
    m = matcher(["**/*.py", "!migrations/**", "!**/conftest.py"])
    assert m.matches(under("models.py")) is True
    assert m.matches(under("migrations/0001_initial.py")) is False
    assert m.matches(under("conftest.py")) is False
    assert m.matches(under("pkg/conftest.py")) is False
    assert m.matches(under("pkg/conftest_helpers.py")) is True


def test_later_watch_pattern_wins_over_earlier_negation() -> None:
    m = matcher(["**/*.py", "!gen/**", "gen/keep.py"])
    assert m.matches(under("gen/other.py")) is False
    assert m.matches(under("gen/keep.py")) is True


def test_empty_watch_list_matches_nothing() -> None:
    assert matcher([]).matches(under("app.py")) is False


# -- built-in ignores --------------------------------------------------------------------


@pytest.mark.parametrize(
    "rel",
    [
        ".git/hooks/pre-commit.py",
        ".hg/store.py",
        ".svn/x.py",
        "__pycache__/app.py",
        "pkg/__pycache__/views.cpython-311.py",
        "app.pyc",
        "pkg/app.pyo",
        ".venv/lib/python3.11/site-packages/flask/app.py",
        "venv/lib/site.py",
        "frontend/node_modules/pkg/build.py",
        "node_modules/x.py",
        ".mypy_cache/3.11/app.py",
        ".pytest_cache/v/cache.py",
        ".ruff_cache/x.py",
        ".tox/py311/lib/x.py",
        ".nox/x.py",
        "devrun.egg-info/top_level.py",
        "src/my_pkg.egg-info/x.py",
        ".devrun/state.py",
        "sub/.devrun/state.py",
    ],
)
def test_builtin_ignored_folders_and_files_never_match(rel: str) -> None:
    m = matcher(["**/*"])  # watch everything, so only the ignore list can say no
    assert m.matches(under(rel)) is False


@pytest.mark.parametrize(
    "rel",
    [
        "app.py.swp",
        ".app.py.swp",
        "pkg/.views.py.swx",
        "app.py~",
        "pkg/views.py~",
        ".#app.py",
        "pkg/.#views.py",
        "4913",
        "pkg/4913",
    ],
)
def test_editor_temporaries_never_match(rel: str) -> None:
    m = matcher(["**/*", "**/*~", "**/4913"])
    assert m.matches(under(rel)) is False


@pytest.mark.parametrize("rel", ["#app.py#", "pkg/#views.py#"])
def test_regression_emacs_autosave_files_are_not_ignored(rel: str) -> None:
    """Regression (was a bug in BUILTIN_IGNORES): in gitignore syntax a line starting with `#`
    is a comment, so the built-in pattern "#*#" is discarded by pathspec and Emacs auto-save files like
    `#app.py#` are not ignored (they need to be written as r"\\#*#")."""
    m = matcher(["**/*"])
    assert m.matches(under(rel)) is False


@pytest.mark.parametrize(
    "rel",
    [
        "venv.py",  # only a *folder* named venv is ignored
        "git.py",
        "pkg/node_modules.py",
        "swp.py",
        "app4913.py",
        "pycache.py",
        "my_venv/app.py",
        "egg-info.py",
        "devrun.py",
    ],
)
def test_builtin_ignores_do_not_catch_similar_names(rel: str) -> None:
    assert matcher().matches(under(rel)) is True


def test_builtin_ignores_cannot_be_turned_off_by_watch() -> None:
    m = matcher(["**/*.py", "__pycache__/**", ".venv/**"])
    assert m.matches(under("__pycache__/x.py")) is False
    assert m.matches(under(".venv/lib/x.py")) is False


def test_builtin_ignore_list_holds_the_documented_entries() -> None:
    for pattern in (".git/", "__pycache__/", "*.pyc", ".venv/", "venv/", "node_modules/", ".mypy_cache/",
                    ".pytest_cache/", ".tox/", "*.egg-info/", "*.swp", "*.swx", "*~", ".#*", "4913", ".devrun/"):
        assert pattern in BUILTIN_IGNORES


# -- user ignores ------------------------------------------------------------------------


def test_user_ignore_folder_glob() -> None:
    m = matcher(ignore=["tests/**"])
    assert m.matches(under("tests/test_app.py")) is False
    assert m.matches(under("tests/unit/test_deep.py")) is False
    assert m.matches(under("app.py")) is True
    assert m.matches(under("pkg/tests/test_x.py")) is True  # "tests/**" is anchored at the root
    assert m.matches(under("tests.py")) is True


def test_user_ignore_adds_to_the_builtin_ones() -> None:
    m = matcher(ignore=["settings_local.py"])
    assert m.matches(under("settings_local.py")) is False
    assert m.matches(under("pkg/settings_local.py")) is False
    assert m.matches(under("__pycache__/x.py")) is False  # built-ins still apply
    assert m.matches(under("settings.py")) is True


def test_user_ignore_negation_re_includes_a_file() -> None:
    m = matcher(ignore=["generated/**", "!generated/keep.py"])
    assert m.matches(under("generated/auto.py")) is False
    assert m.matches(under("generated/keep.py")) is True


# -- paths outside the root --------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/srv/other/app.py",
        "/srv/project2/app.py",  # a sibling whose name starts with the root's name
        "/srv/app.py",
        "/app.py",
        "/srv/project",  # the root itself
        "/srv/project/",
        "/srv/project/../other/x.py",
    ],
)
def test_paths_outside_the_root_never_match(path: str) -> None:
    m = matcher(["**/*", "*", "**"])
    assert m.matches(path) is False


def test_label_is_relative_to_the_root_with_forward_slashes() -> None:
    m = matcher()
    assert m.label(under("pkg/views.py")) == "pkg/views.py"
    assert m.label(ROOT / "app.py") == "app.py"
    assert m.label("/srv/project/pkg/../app.py") == "app.py"
    assert m.label("/srv/project/./a//b.py") == "a/b.py"


def test_path_is_normalised_before_matching() -> None:
    m = matcher(ignore=["tests/**"])
    assert m.matches("/srv/project/pkg/../app.py") is True
    assert m.matches("/srv/project/pkg/../tests/x.py") is False
    assert m.matches("/srv/project/./a//b.py") is True


def test_file_named_with_two_leading_dots_is_inside_the_root() -> None:
    m = matcher()
    assert m.label(under("..hidden.py")) == "..hidden.py"
    assert m.matches(under("..hidden.py")) is True


def test_relative_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    m = Matcher(Path("proj"), ["**/*.py"], [], respect_gitignore=False)
    assert Path(m.root) == tmp_path / "proj"
    assert m.matches(tmp_path / "proj" / "app.py") is True
    assert m.matches(Path("proj") / "app.py") is True  # relative paths are taken from the cwd too
    assert m.matches(tmp_path / "app.py") is False


def test_watch_pattern_can_reach_a_sibling_folder_explicitly() -> None:
    m = matcher(["**/*.py", "../shared/**/*.py", "!../shared/tests/**"])
    assert m.matches("/srv/shared/models.py") is True
    assert m.matches("/srv/shared/sub/util.py") is True
    assert m.matches("/srv/shared/tests/test_models.py") is False  # negated
    assert m.matches("/srv/shared/.venv/lib/x.py") is False  # built-ins apply there too
    assert m.matches("/srv/shared/__pycache__/x.py") is False
    assert m.matches("/srv/shared/notes.txt") is False
    assert m.matches("/srv/other/x.py") is False  # only what a pattern names
    assert m.matches("/srv/x.py") is False
    assert m.label("/srv/shared/models.py") == "../shared/models.py"


def test_roots_are_the_folders_the_watch_patterns_can_reach() -> None:
    assert matcher().roots == [str(ROOT)]
    assert matcher(["src/pkg/**/*.py", "src/pkg/templates/**"]).roots == [str(ROOT / "src" / "pkg")]
    assert sorted(matcher(["**/*.py", "../shared/**/*.py"]).roots) == ["/srv/project", "/srv/shared"]
    assert matcher(["*.py", "!migrations/**"]).roots == [str(ROOT)]


# -- .gitignore --------------------------------------------------------------------------


def test_gitignore_of_the_repository_is_respected(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("generated/\n*.local.py\n")
    app = tmp_path / "app"
    app.mkdir()
    (app / ".gitignore").write_text("scratch.py\n")
    m = Matcher(app, ["**/*.py"], [])
    assert m.matches(app / "views.py") is True
    assert m.matches(app / "generated" / "x.py") is False
    assert m.matches(app / "settings.local.py") is False
    assert m.matches(app / "scratch.py") is False
    assert m.matches(app / "pkg" / "scratch.py") is False
    assert m.is_ignored_dir(app / "generated") is True
    plain = Matcher(app, ["**/*.py"], [], respect_gitignore=False)
    assert plain.matches(app / "generated" / "x.py") is True
    assert plain.matches(app / "scratch.py") is True


def test_gitignore_outside_a_repository_is_not_read(tmp_path: Path) -> None:
    if any((p / ".git").exists() for p in (tmp_path, *tmp_path.parents)):
        pytest.skip("the temporary folder is inside a git repository")
    (tmp_path / ".gitignore").write_text("*.py\n")
    assert Matcher(tmp_path, ["**/*.py"], []).matches(tmp_path / "app.py") is True


# -- folders that are never walked -------------------------------------------------------


@pytest.mark.parametrize(
    "rel",
    [".git", "__pycache__", "pkg/__pycache__", ".venv", "venv", "web/node_modules", ".mypy_cache",
     ".pytest_cache", ".tox", "devrun.egg-info", ".devrun"],
)
def test_is_ignored_dir_for_builtin_folders(rel: str) -> None:
    assert matcher().is_ignored_dir(under(rel)) is True


@pytest.mark.parametrize("rel", ["pkg", "src/app", "templates", "venvs", "git", "node_module", "tests"])
def test_is_ignored_dir_false_for_ordinary_folders(rel: str) -> None:
    assert matcher().is_ignored_dir(under(rel)) is False


def test_is_ignored_dir_for_user_ignored_folders() -> None:
    m = matcher(ignore=["tests/**", "build/", "docs"])
    assert m.is_ignored_dir(under("tests")) is True
    assert m.is_ignored_dir(under("build")) is True
    assert m.is_ignored_dir(under("docs")) is True
    assert m.is_ignored_dir(under("pkg/build")) is True  # "build/" has no leading slash: any depth
    assert m.is_ignored_dir(under("pkg")) is False


def test_is_ignored_dir_is_false_for_the_root_and_outside_it() -> None:
    m = matcher(ignore=["*"])
    assert m.is_ignored_dir(str(ROOT)) is False
    assert m.is_ignored_dir("/srv") is False
    assert m.is_ignored_dir("/srv/other/.git") is False


def test_root_inside_an_ignored_looking_folder_still_works() -> None:
    # Only the part of the path below the root is matched against the patterns.
    root = Path("/home/me/.venv/src/project")
    m = matcher(root=root)
    assert m.matches(under("app.py", root)) is True
    assert m.is_ignored_dir(under("pkg", root)) is False


def test_nested_path_built_with_os_path_join(tmp_path: Path) -> None:
    m = matcher(root=tmp_path)
    nested = os.path.join(str(tmp_path), "a", "b", "c.py")
    assert m.label(nested) == "a/b/c.py"
    assert m.matches(nested) is True
