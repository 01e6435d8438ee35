"""hydra.contexts: the file, save_context, and the order settings are resolved in."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hydra.contexts import Context, ContextError, load, resolve, save_context
from hydra.tls import ClientTls


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "hydra-home"


@pytest.fixture
def environ(home: Path) -> dict[str, str]:
    """An environment with nothing set but HYDRA_HOME."""
    return {"HYDRA_HOME": str(home)}


def write_token(directory: Path, name: str, secret: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.token"
    path.write_text(secret + "\n")
    return path


@pytest.fixture
def two_contexts(home: Path, tmp_path: Path) -> None:
    """dev (current): 127.0.0.1:7070 plaintext; prod: two TLS coordinators."""
    dev = Context(coordinators=("127.0.0.1:7070",), token_file=write_token(tmp_path, "dev", "d"))
    prod = Context(
        coordinators=("hydra-1:7070", "hydra-2:7070"),
        token_file=write_token(tmp_path, "prod", "p"),
        tls_ca=tmp_path / "prod-ca.pem",
        tls_server_name="hydra.internal",
    )
    save_context("prod", prod, path=home / "config.yaml")
    save_context("dev", dev, path=home / "config.yaml")


def test_saved_privately_and_read_back(home: Path, tmp_path: Path) -> None:
    context = Context(coordinators=("a:1", "b:2"), token_file=tmp_path / "t", tls_ca=tmp_path / "c")
    path = save_context("x", context, path=home / "config.yaml")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    loaded = load(path)
    assert loaded.current == "x" and loaded.contexts["x"] == context
    save_context("y", Context(coordinators=("c:3",)), current=False, path=path)
    loaded = load(path)
    assert loaded.current == "x" and set(loaded.contexts) == {"x", "y"}
    assert [p.name for p in home.iterdir()] == ["config.yaml"]  # no temporary left behind


@pytest.mark.usefixtures("two_contexts")
def test_the_current_context_without_anything_given(environ: dict[str, str]) -> None:
    resolved = resolve(environ=environ)
    assert resolved.targets == ("127.0.0.1:7070",)
    assert resolved.token == "d" and resolved.tls is None and resolved.context == "dev"


@pytest.mark.usefixtures("two_contexts")
def test_a_target_finds_its_context(environ: dict[str, str], tmp_path: Path) -> None:
    resolved = resolve(targets=["hydra-2:7070"], environ=environ)
    assert resolved.targets == ("hydra-2:7070",)
    assert resolved.token == "p" and resolved.context == "prod"
    assert resolved.tls == ClientTls(ca=tmp_path / "prod-ca.pem", server_name="hydra.internal")


@pytest.mark.usefixtures("two_contexts")
def test_an_unknown_target_gets_no_context_credential(environ: dict[str, str]) -> None:
    resolved = resolve(targets=["elsewhere:7070"], environ=environ)
    assert resolved.token is None and resolved.tls is None and resolved.context is None


@pytest.mark.usefixtures("two_contexts")
def test_flags_then_environment_then_context(environ: dict[str, str]) -> None:
    environ |= {"HYDRA_TOKEN": "from-env", "HYDRA_CONTEXT": "prod"}
    resolved = resolve(environ=environ)
    assert resolved.targets == ("hydra-1:7070", "hydra-2:7070")
    assert resolved.token == "from-env"
    resolved = resolve(token="from-flag", tls=ClientTls(), environ=environ)
    assert resolved.token == "from-flag" and resolved.tls == ClientTls()
    environ["HYDRA_COORDINATORS"] = "x:1,y:2"
    assert resolve(environ=environ).targets == ("x:1", "y:2")
    assert resolve(context="dev", environ=environ).token == "from-env"
    assert resolve(token="", environ=environ).token is None  # explicitly none


@pytest.mark.usefixtures("two_contexts")
def test_the_token_file_is_read_when_resolving(environ: dict[str, str], tmp_path: Path) -> None:
    write_token(tmp_path, "dev", "rotated")
    assert resolve(environ=environ).token == "rotated"


def test_no_file_is_no_context_unless_one_is_asked_for(environ: dict[str, str]) -> None:
    resolved = resolve(environ=environ)
    assert resolved.targets == ("127.0.0.1:7070",) and resolved.token is None
    with pytest.raises(ContextError, match="HYDRA_CONFIG: cannot read"):
        resolve(context="prod", environ=environ)


def test_an_invalid_file_is_an_error_only_when_asked_for(
    environ: dict[str, str], home: Path
) -> None:
    home.mkdir()
    (home / "config.yaml").write_text("contexts: [1, 2]\n")
    assert resolve(environ=environ).context is None
    with pytest.raises(ContextError, match="expected a mapping with `contexts:`"):
        resolve(context="dev", environ=environ)


@pytest.mark.usefixtures("two_contexts")
def test_an_unknown_context_name(environ: dict[str, str]) -> None:
    with pytest.raises(ContextError, match="--context: no context 'staging'"):
        resolve(context="staging", environ=environ)


def test_unknown_keys_are_named(environ: dict[str, str], home: Path) -> None:
    home.mkdir()
    (home / "config.yaml").write_text("contexts:\n  dev:\n    tokenfile: x\n")
    with pytest.raises(ContextError, match=r"contexts\.dev: .*unknown keys \['tokenfile'\]"):
        resolve(context="dev", environ=environ)


def test_hydra_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.yaml"
    save_context("only", Context(coordinators=("z:9",)), path=path)
    assert resolve(environ={"HYDRA_CONFIG": str(path)}).targets == ("z:9",)
