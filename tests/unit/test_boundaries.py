"""Package boundaries, read from the imports (ast), not from running the code.

- Outside paygate/client/, the client library is used only through its public API: the
  names `paygate.client` exports in `__all__`, never one of its modules
  (`paygate.client._async_client`, `paygate.client.token_interceptor`, ...). What several
  clients of the servers share lives in paygate/common/.
- The scripts in ops/ never import the test harness (tests/): the tests may use ops/, not
  the other way round.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

import paygate.client

REPO = pathlib.Path(__file__).resolve().parents[2]
SERVICES = REPO / "services"
PACKAGE = SERVICES / "paygate"
CLIENT = "paygate.client"
TEST_MODULES = frozenset({"tests"} | {path.stem for path in (REPO / "tests").rglob("*.py")})


def package_of(path: pathlib.Path) -> str:
    """The dotted name of the package a module under services/ belongs to."""
    return ".".join(path.relative_to(SERVICES).parent.parts)


def imports(source: str, package: str = "") -> Iterator[tuple[str, str | None]]:
    """(imported module, imported name or None) for each import; relative imports are
    resolved against `package`, the package of the module `source` comes from."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                yield base, alias.name


def client_boundary_violations(source: str, package: str = "") -> list[str]:
    """The imports in `source` that reach past the client library's public API."""
    exported = set(paygate.client.__all__)
    found = []
    for imported, name in imports(source, package):
        if imported.startswith(CLIENT + "."):
            found.append(f"imports the client's module {imported}")
        elif imported == CLIENT and name is not None and name not in exported:
            found.append(f"imports {name} from {CLIENT}, which is not in its __all__")
    return found


def harness_violations(source: str) -> list[str]:
    """The imports in `source` of the test harness (the tests package or one of its modules)."""
    return [
        f"imports {imported} from tests/"
        for imported, _ in imports(source)
        if imported.split(".")[0] in TEST_MODULES
    ]


def test_other_packages_use_only_the_client_public_api() -> None:
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        package = package_of(path)
        if f"{package}.".startswith((CLIENT + ".", "paygate.gen.")):
            continue
        violations += [
            f"{path.relative_to(REPO)}: {violation}"
            for violation in client_boundary_violations(path.read_text(), package)
        ]
    assert violations == []


def test_ops_scripts_do_not_import_the_test_harness() -> None:
    violations = []
    for path in sorted((REPO / "ops").rglob("*.py")):
        violations += [
            f"{path.relative_to(REPO)}: {violation}"
            for violation in harness_violations(path.read_text())
        ]
    assert violations == []


def test_the_checks_see_private_and_unexported_imports() -> None:
    source = "\n".join(
        [
            "import paygate.client._target",
            "from paygate.client._errors import error_from_rpc",
            "from paygate.client.token_interceptor import TokenHolder",
            "from paygate.client import AsyncClient, open_channel",
            "from ..client import _models",
        ]
    )
    assert client_boundary_violations(source, "paygate.bench") == [
        "imports the client's module paygate.client._target",
        "imports the client's module paygate.client._errors",
        "imports the client's module paygate.client.token_interceptor",
        "imports open_channel from paygate.client, which is not in its __all__",
        "imports _models from paygate.client, which is not in its __all__",
    ]
    assert client_boundary_violations("from paygate.client import AsyncClient, Payment") == []


def test_the_checks_see_the_test_harness() -> None:
    source = "import suite as harness\nfrom tests.users import make_user\nimport json\n"
    assert harness_violations(source) == [
        "imports suite from tests/",
        "imports tests.users from tests/",
    ]
