"""The committed generated code is what generate.py makes of proto/, and the wire only grows."""

import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
GENERATOR = PACKAGE_ROOT / "generate.py"
PROTO_ROOT = PACKAGE_ROOT.parents[1] / "proto"
GENERATED = Path("src") / "heron_proto" / "heron"
BASELINE = "wire_baseline.json"
PROXY_PROTO = Path("heron") / "v1" / "proxy.proto"


def run_generator(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def generated_files(root: Path) -> dict[str, bytes]:
    files = {BASELINE: (root / BASELINE).read_bytes()}
    for path in sorted((root / GENERATED).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def test_committed_code_equals_a_fresh_regeneration(tmp_path: Path) -> None:
    result = run_generator("--out", tmp_path)
    assert result.returncode == 0, result.stderr

    committed = generated_files(PACKAGE_ROOT)
    fresh = generated_files(tmp_path)
    stale = sorted(
        name for name in committed.keys() | fresh.keys() if committed.get(name) != fresh.get(name)
    )
    assert not stale, (
        f"generated code is out of date with proto/: {stale}; "
        "run `uv run python libs/heron-proto/generate.py` and commit the result"
    )
    expected = {
        "src/heron_proto/heron/__init__.py",
        "src/heron_proto/heron/v1/__init__.py",
        "src/heron_proto/heron/v1/proxy_pb2.py",
        "src/heron_proto/heron/v1/proxy_pb2.pyi",
        "src/heron_proto/heron/v1/proxy_pb2_grpc.py",
        "src/heron_proto/heron/v1/proxy_pb2_grpc.pyi",
    }
    assert expected <= committed.keys()


def test_generated_imports_are_absolute() -> None:
    for path in (PACKAGE_ROOT / GENERATED).rglob("*.py*"):
        if path.suffix not in {".py", ".pyi"}:  # compiled bytecode in __pycache__
            continue
        text = path.read_text(encoding="utf-8")
        assert "from heron.v1 import" not in text, path
        assert "import heron." not in text, path
    grpc_module = (PACKAGE_ROOT / GENERATED / "v1" / "proxy_pb2_grpc.py").read_text(
        encoding="utf-8"
    )
    assert "from heron_proto.heron.v1 import proxy_pb2" in grpc_module
    assert "'/heron.v1.ProxyService/Sync'" in grpc_module  # the wire name is left alone


def test_check_mode_reports_up_to_date() -> None:
    result = run_generator("--check")
    assert result.returncode == 0, result.stderr


def copy_protos(tmp_path: Path) -> Path:
    root = tmp_path / "proto"
    shutil.copytree(PROTO_ROOT, root)
    return root


def test_a_renumbered_field_is_refused(tmp_path: Path) -> None:
    root = copy_protos(tmp_path)
    proto = root / PROXY_PROTO
    text = proto.read_text(encoding="utf-8")
    assert "string proxy_domain = 2;" in text
    proto.write_text(text.replace("string proxy_domain = 2;", "string proxy_domain = 7;"))

    result = run_generator("--proto-root", root, "--out", tmp_path / "out")

    assert result.returncode == 1
    assert (
        "message heron.v1.Hello: proxy_domain changed from '2 singular TYPE_STRING'"
        in result.stderr
    )
    assert not (tmp_path / "out").exists()


def test_a_dropped_field_needs_its_number_and_name_reserved(tmp_path: Path) -> None:
    root = copy_protos(tmp_path)
    proto = root / PROXY_PROTO
    text = proto.read_text(encoding="utf-8")
    field = "  string version = 3;\n"
    assert field in text

    proto.write_text(text.replace(field, ""), encoding="utf-8")
    refused = run_generator("--proto-root", root, "--out", tmp_path / "refused")
    assert refused.returncode == 1
    assert "message heron.v1.Hello: version (3 singular TYPE_STRING) was removed" in refused.stderr

    proto.write_text(
        text.replace(field, '  reserved 3;\n  reserved "version";\n'), encoding="utf-8"
    )
    accepted = run_generator("--proto-root", root, "--out", tmp_path / "accepted")
    assert accepted.returncode == 0, accepted.stderr


def test_a_new_field_is_added_to_the_baseline(tmp_path: Path) -> None:
    root = copy_protos(tmp_path)
    proto = root / PROXY_PROTO
    text = proto.read_text(encoding="utf-8")
    anchor = "  EdgeCapabilities capabilities = 6;\n"
    proto.write_text(text.replace(anchor, anchor + "  string started_at = 7;\n"), encoding="utf-8")

    result = run_generator("--proto-root", root, "--out", tmp_path / "out")

    assert result.returncode == 0, result.stderr
    baseline = (tmp_path / "out" / BASELINE).read_text(encoding="utf-8")
    assert '"started_at": "7 singular TYPE_STRING"' in baseline
    assert '"proxy_domain": "2 singular TYPE_STRING"' in baseline
