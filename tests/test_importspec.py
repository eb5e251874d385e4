"""Unit tests for devrun.importspec: parsing `module:attr` and `module:factory(literal args)`."""

from __future__ import annotations

import pytest

from devrun.importspec import ImportSpec, ImportSpecError, parse_import_string


def parse_error(text: str) -> str:
    """The message of the ImportSpecError that parsing text must raise."""
    with pytest.raises(ImportSpecError) as info:
        parse_import_string(text)
    return str(info.value)


# -- plain attributes --------------------------------------------------------------------


def test_module_and_attribute() -> None:
    spec = parse_import_string("hello:app")
    assert spec == ImportSpec("hello", "app")
    assert spec.module == "hello"
    assert spec.attr == "app"
    assert spec.is_call is False
    assert spec.args == ()
    assert spec.kwargs == {}


def test_dotted_module_and_dotted_attribute() -> None:
    spec = parse_import_string("pkg.sub.mod:wsgi.application")
    assert spec.module == "pkg.sub.mod"
    assert spec.attr == "wsgi.application"
    assert spec.is_call is False


def test_surrounding_whitespace_is_stripped() -> None:
    assert parse_import_string("  \tpkg.mod:app \n") == ImportSpec("pkg.mod", "app")


def test_underscores_and_digits_in_names() -> None:
    spec = parse_import_string("_pkg2.m_3:_app_1")
    assert (spec.module, spec.attr) == ("_pkg2.m_3", "_app_1")


def test_is_an_import_spec_error_and_a_value_error() -> None:
    assert issubclass(ImportSpecError, ValueError)


# -- factory calls -----------------------------------------------------------------------


def test_factory_call_without_arguments() -> None:
    spec = parse_import_string("api:create_app()")
    assert spec == ImportSpec("api", "create_app", True, (), {})
    assert spec.is_call is True


def test_factory_call_with_positional_and_keyword_literals() -> None:
    spec = parse_import_string("pkg:create_app('dev', db={'url': 'sqlite://'})")
    assert spec.module == "pkg"
    assert spec.attr == "create_app"
    assert spec.is_call is True
    assert spec.args == ("dev",)
    assert spec.kwargs == {"db": {"url": "sqlite://"}}


def test_factory_call_with_every_kind_of_literal() -> None:
    spec = parse_import_string(
        "pkg.app:make(1, -2.5, 'two', b'raw', None, True, False, [1, 2], (3, 4), {5}, {'k': [6]}, 1j, "
        "debug=True, ports=[5000, 5001], name=\"x\")"
    )
    assert spec.args == (1, -2.5, "two", b"raw", None, True, False, [1, 2], (3, 4), {5}, {"k": [6]}, 1j)
    assert spec.kwargs == {"debug": True, "ports": [5000, 5001], "name": "x"}
    assert list(spec.kwargs) == ["debug", "ports", "name"]  # keyword order kept


def test_dotted_factory_name() -> None:
    spec = parse_import_string("pkg:factories.create_app('x')")
    assert spec.attr == "factories.create_app"
    assert spec.args == ("x",)


def test_colon_inside_a_string_argument_belongs_to_the_call() -> None:
    spec = parse_import_string("pkg:create_app('http://host:80', sep=':')")
    assert spec.module == "pkg"
    assert spec.args == ("http://host:80",)
    assert spec.kwargs == {"sep": ":"}


def test_space_before_parenthesis_is_allowed() -> None:
    spec = parse_import_string("pkg:create_app ('x')")
    assert spec.attr == "create_app"
    assert spec.args == ("x",)


@pytest.mark.parametrize(
    "text",
    [
        "pkg:create_app(config)",  # a name
        "pkg:create_app(debug=DEBUG)",  # a name as keyword value
        "pkg:create_app(load())",  # a call
        "pkg:create_app(x=load())",
        "pkg:create_app(os.environ)",  # attribute access
        "pkg:create_app(lambda: 1)",  # a lambda
        "pkg:create_app(*args)",  # star args
        "pkg:create_app(1 + 2)",  # an expression, not a literal
        "pkg:create_app([x for x in y])",  # a comprehension
        "pkg:create_app(f'{x}')",  # an f-string
        "pkg:create_app(__import__('os'))",
    ],
)
def test_non_literal_arguments_are_refused(text: str) -> None:
    message = parse_error(text)
    assert message.startswith("factory arguments must be literals")
    assert repr(text.partition(":")[2]) in message


@pytest.mark.parametrize("text", ["pkg:create_app(**options)", "pkg:create_app(**{'a': 1})", "pkg:f(1, **{})"])
def test_double_star_kwargs_are_refused(text: str) -> None:
    message = parse_error(text)
    assert "**" in message


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("pkg:create_app()()", "create_app()"),  # calling the result of a call
        ("pkg:apps[0]()", "apps[0]"),  # subscript
        ("pkg:'x'()", "'x'"),
        ("pkg:(lambda: 1)()", "lambda: 1"),
    ],
)
def test_only_a_plain_or_dotted_name_may_be_called(text: str, name: str) -> None:
    assert parse_error(text) == f"{name!r} is not a valid factory name"


@pytest.mark.parametrize("text", ["pkg:create_app(", "pkg:create_app('x'", "pkg:create_app(1 2)", "pkg:f(x=)"])
def test_unparseable_factory_call(text: str) -> None:
    assert parse_error(text).startswith(f"cannot parse factory call {text.partition(':')[2]!r}: ")


@pytest.mark.parametrize("text", ["pkg:(create_app)", "pkg:a or b()", "pkg:[create_app()]", "pkg:create_app() + 1"])
def test_target_with_parenthesis_that_is_not_a_call(text: str) -> None:
    target = text.partition(":")[2]
    assert parse_error(text) == f"{target!r} is not a factory call like create_app()"


def test_name_followed_by_parenthesised_literal_is_a_call() -> None:
    assert parse_import_string("pkg:app (1)") == ImportSpec("pkg", "app", True, (1,), {})


# -- malformed strings -------------------------------------------------------------------


@pytest.mark.parametrize("text", ["hello", "hello.app", "", "   ", "create_app()"])
def test_missing_colon(text: str) -> None:
    message = parse_error(text)
    assert message == f"expected 'module:attr' or 'module:factory()', found {text.strip()!r}"


@pytest.mark.parametrize("text", [":app", "hello:", ":", " : ", ":create_app()"])
def test_empty_module_or_attribute(text: str) -> None:
    assert parse_error(text).startswith("expected 'module:attr' or 'module:factory()'")


@pytest.mark.parametrize(
    ("text", "module"),
    [
        ("1pkg:app", "1pkg"),
        ("my-pkg:app", "my-pkg"),
        ("pkg.:app", "pkg."),
        (".pkg:app", ".pkg"),
        ("pkg..mod:app", "pkg..mod"),
        ("pkg/mod:app", "pkg/mod"),
        ("pkg mod:app", "pkg mod"),
        ("pkg :app", "pkg "),
    ],
)
def test_invalid_module_name(text: str, module: str) -> None:
    assert parse_error(text) == f"{module!r} is not a valid module name"


@pytest.mark.parametrize(
    ("text", "attr"),
    [
        ("pkg:1app", "1app"),
        ("pkg:my-app", "my-app"),
        ("pkg:app.", "app."),
        ("pkg:.app", ".app"),
        ("pkg:a b", "a b"),
        ("pkg: app", " app"),
        ("pkg:app:x", "app:x"),
        ("pkg:apps[0]", "apps[0]"),
    ],
)
def test_invalid_attribute_name(text: str, attr: str) -> None:
    assert parse_error(text) == f"{attr!r} is not a valid attribute name"


# -- str() round trip --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("hello:app", "hello:app"),
        ("pkg.mod:wsgi.app", "pkg.mod:wsgi.app"),
        ("api:create_app()", "api:create_app()"),
        ("pkg:create_app('dev', db={'url': 'sqlite://'})", "pkg:create_app('dev', db={'url': 'sqlite://'})"),
        ('pkg:f("x", 1,2 ,  k = [1,(2,)])', "pkg:f('x', 1, 2, k=[1, (2,)])"),
        ("pkg:f(None, True, b'x', -1.5)", "pkg:f(None, True, b'x', -1.5)"),
    ],
)
def test_str_shows_the_canonical_form(text: str, shown: str) -> None:
    assert str(parse_import_string(text)) == shown


@pytest.mark.parametrize(
    "spec",
    [
        ImportSpec("m", "a"),
        ImportSpec("m.n", "a.b"),
        ImportSpec("m", "f", True),
        ImportSpec("m", "f", True, ("a'b\"c", 0, [1, {"x": (2, None)}], {3}), {"k": b"\x00", "z": -0.0}),
        ImportSpec("pkg", "factories.make", True, (), {"db": {"url": "sqlite://", "pool": [1, 2]}}),
    ],
)
def test_str_round_trips(spec: ImportSpec) -> None:
    again = parse_import_string(str(spec))
    assert again == spec
    assert str(again) == str(spec)


def test_plain_attribute_is_not_shown_as_a_call() -> None:
    spec = ImportSpec("m", "f", False, (1,), {"k": 2})
    assert str(spec) == "m:f"


def test_spec_is_frozen() -> None:
    spec = parse_import_string("m:a")
    with pytest.raises(AttributeError):
        spec.attr = "b"  # type: ignore[misc]


def test_kwargs_default_is_not_shared_between_specs() -> None:
    first, second = ImportSpec("m", "a"), ImportSpec("m", "b")
    assert first.kwargs is not second.kwargs


# -- package bugs (left failing on purpose) ----------------------------------------------


@pytest.mark.parametrize("text", ["pkg:create_app({[]: 1})", "pkg:create_app({{1}})", "pkg:create_app(x={[1]: 2})"])
def test_regression_unhashable_literal_raises_type_error_not_import_spec_error(text: str) -> None:
    """Regression (was a bug, devrun/importspec.py:60-66): ast.literal_eval raises TypeError ("unhashable type")
    for a dict key or set member that is a list/set/dict; only ValueError is caught, so the
    TypeError escapes parse_import_string (and crashes config loading, see test_config.py)."""
    message = parse_error(text)
    assert "literal" in message or "unhashable" in message


def test_regression_repeated_keyword_argument_is_silently_accepted() -> None:
    """Regression (was a bug, devrun/importspec.py:62-65): Python refuses `f(x=1, x=2)` ("keyword argument
    repeated"), but ast.parse does not check it and the loop keeps only the last value, so the
    first argument is silently dropped."""
    parse_error("pkg:create_app(x=1, x=2)")



def test_regression_double_star_kwargs_message_is_never_shown() -> None:
    """Regression (was a bug, devrun/importspec.py:64-66): the dedicated "**kwargs is not allowed" error is
    raised inside the try whose `except ValueError` (line 66) also catches ImportSpecError (a
    ValueError subclass), so the user always gets the generic "must be literals" message."""
    assert parse_error("pkg:create_app(**options)").startswith("**kwargs is not allowed in a factory call")
