"""Regenerate heron_proto's Python code from the repository's ``proto/`` tree.

Usage, from the workspace root::

    uv run python libs/heron-proto/generate.py            # rewrite the committed code
    uv run python libs/heron-proto/generate.py --check    # exit 1 if it is out of date
    uv run python libs/heron-proto/generate.py --out DIR  # write a copy under DIR instead

For every ``proto/heron/<version>/*.proto`` it writes ``*_pb2.py`` and ``*_pb2_grpc.py``
(grpcio-tools) and their ``.pyi`` stubs (mypy-protobuf; the gRPC stubs describe ``grpc.aio``) to
``src/heron_proto/heron/<version>/``, rewrites the generated ``from heron.<version> import …``
lines to ``heron_proto.heron.<version>``, and adds the packages' ``__init__.py`` files. The output depends only on the ``.proto`` files and
the locked tool versions, so regenerating unchanged sources gives identical bytes.

It also guards the rule "additive changes only": ``wire_baseline.json`` records every message
field, enum value and RPC that has ever been generated. Regeneration refuses a ``.proto`` that
renumbers, retypes or drops one of them (a dropped field or enum value is fine once its number
and name are ``reserved``), and adds the new ones to the baseline. ``--accept-breaking`` overrides
this for a change an issue explicitly asks for.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from google.protobuf import descriptor_pb2

PACKAGE_ROOT = Path(__file__).resolve().parent
PROTO_ROOT = PACKAGE_ROOT.parents[1] / "proto"
BASELINE_NAME = "wire_baseline.json"
PYTHON_PACKAGE = "heron_proto"
GENERATED_SUBDIR = Path("src") / PYTHON_PACKAGE  # relative to the output root
PROTO_TOP_PACKAGE = "heron"  # every .proto lives under proto/heron/ and in package heron.*
GENERATED_INIT = '"""Generated from proto/{path} by libs/heron-proto/generate.py; do not edit."""\n'

_FROM_IMPORT = re.compile(rf"^(\s*)from {PROTO_TOP_PACKAGE}((?:\.\w+)*) import ", re.MULTILINE)
_PLAIN_IMPORT = re.compile(rf"^\s*import {PROTO_TOP_PACKAGE}\b", re.MULTILINE)

Wire = dict[str, dict[str, str]]  # full type name → member name → signature


class GenerationError(Exception):
    """The code could not be generated; the message says why."""


def proto_files(proto_root: Path) -> list[str]:
    """The ``.proto`` files under ``proto_root``, relative to it, in a stable order."""
    files = sorted(path.relative_to(proto_root).as_posix() for path in proto_root.rglob("*.proto"))
    if not files:
        raise GenerationError(f"no .proto files under {proto_root}")
    outside = [name for name in files if not name.startswith(f"{PROTO_TOP_PACKAGE}/")]
    if outside:
        raise GenerationError(f"every .proto must live under {PROTO_TOP_PACKAGE}/: {outside}")
    return files


def _plugin(name: str) -> str:
    beside_python = Path(sys.executable).parent / name  # the virtualenv's bin/ (not resolved)
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        raise GenerationError(
            f"{name} not found: install the workspace's dev dependencies (`uv sync`)"
        )
    return found


def _run_protoc(proto_root: Path, files: Sequence[str], out_dir: Path) -> Path:
    descriptor_set = out_dir / "descriptor_set.binpb"
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={proto_root}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        # Stubs for grpc.aio only: Heron's services are asyncio throughout, and the stubs for
        # both APIs need grpc's own type stubs to check (the workspace treats grpc as untyped).
        f"--mypy_grpc_out=only_async:{out_dir}",
        f"--descriptor_set_out={descriptor_set}",
        *files,
    ]
    # Every argument is a path of ours or a fixed flag: nothing comes from outside.
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise GenerationError(f"protoc failed ({result.returncode}):\n{result.stderr.strip()}")
    return descriptor_set


def _absolute_imports(source: str, path: Path) -> str:
    """``from heron.v1 import x`` → ``from heron_proto.heron.v1 import x``; strings untouched."""
    if _PLAIN_IMPORT.search(source):
        # Would need every later use of ``heron.…`` rewritten too: refuse rather than guess.
        raise GenerationError(f"{path}: unexpected `import {PROTO_TOP_PACKAGE}…` statement")
    return _FROM_IMPORT.sub(rf"\1from {PYTHON_PACKAGE}.{PROTO_TOP_PACKAGE}\2 import ", source)


def _fix_tree(generated: Path) -> None:
    for path in sorted(generated.rglob("*")):
        if path.suffix in {".py", ".pyi"}:
            source = path.read_text(encoding="utf-8")
            path.write_text(_absolute_imports(source, path), encoding="utf-8")
    for directory in [generated, *sorted(p for p in generated.rglob("*") if p.is_dir())]:
        relative = directory.relative_to(generated.parent).as_posix()
        (directory / "__init__.py").write_text(
            GENERATED_INIT.format(path=relative), encoding="utf-8"
        )


def _field_signature(field: descriptor_pb2.FieldDescriptorProto) -> str:
    label = "repeated" if field.label == field.LABEL_REPEATED else "singular"
    kind = field.type_name or descriptor_pb2.FieldDescriptorProto.Type.Name(field.type)
    return f"{field.number} {label} {kind}"


def _add_messages(
    wire: Wire, prefix: str, messages: Iterable[descriptor_pb2.DescriptorProto]
) -> None:
    for message in messages:
        name = f"{prefix}.{message.name}"
        wire[f"message {name}"] = {f.name: _field_signature(f) for f in message.field}
        reserved = {f"reserved {n}": "name" for n in message.reserved_name}
        for span in message.reserved_range:  # [start, end)
            reserved.update({f"reserved #{n}": "number" for n in range(span.start, span.end)})
        if reserved:
            wire[f"reserved {name}"] = reserved
        _add_enums(wire, name, message.enum_type)
        _add_messages(wire, name, message.nested_type)


def _add_enums(
    wire: Wire, prefix: str, enums: Iterable[descriptor_pb2.EnumDescriptorProto]
) -> None:
    for enum in enums:
        name = f"{prefix}.{enum.name}"
        wire[f"enum {name}"] = {value.name: str(value.number) for value in enum.value}
        reserved = {f"reserved {n}": "name" for n in enum.reserved_name}
        for span in enum.reserved_range:  # [start, end], inclusive for enums
            reserved.update({f"reserved #{n}": "number" for n in range(span.start, span.end + 1)})
        if reserved:
            wire[f"reserved {name}"] = reserved


def wire_of(descriptor_set: Path) -> Wire:
    """Every message field, enum value and RPC in a descriptor set, with its wire signature."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    wire: Wire = {}
    for file in files.file:
        _add_messages(wire, file.package, file.message_type)
        _add_enums(wire, file.package, file.enum_type)
        for service in file.service:
            wire[f"service {file.package}.{service.name}"] = {
                method.name: (
                    f"{'stream ' if method.client_streaming else ''}{method.input_type} → "
                    f"{'stream ' if method.server_streaming else ''}{method.output_type}"
                )
                for method in service.method
            }
    return wire


def breaking_changes(baseline: Wire, current: Wire) -> list[str]:
    """What ``current`` changes or drops from ``baseline`` without reserving it."""
    problems = []
    for owner, members in sorted(baseline.items()):
        if owner.startswith("reserved "):
            continue
        now = current.get(owner)
        if now is None:
            problems.append(f"{owner} was removed")
            continue
        reserved = current.get("reserved " + owner.split(" ", 1)[1], {})
        for member, signature in sorted(members.items()):
            if member not in now:
                number = signature.split(" ", 1)[0]
                if f"reserved {member}" in reserved and f"reserved #{number}" in reserved:
                    continue  # removed the right way
                problems.append(
                    f"{owner}: {member} ({signature}) was removed without reserving its "
                    "number and name"
                )
            elif now[member] != signature:
                problems.append(f"{owner}: {member} changed from {signature!r} to {now[member]!r}")
    return problems


def _read_baseline(path: Path) -> Wire:
    if not path.exists():
        return {}
    loaded: Wire = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def _merged(baseline: Wire, current: Wire) -> Wire:
    merged = {owner: dict(members) for owner, members in baseline.items()}
    for owner, members in current.items():
        merged.setdefault(owner, {}).update(members)
    return merged


def generate(
    out_root: Path, *, proto_root: Path = PROTO_ROOT, accept_breaking: bool = False
) -> None:
    """Write the generated package and the updated wire baseline under ``out_root``.

    ``out_root`` takes the place of ``libs/heron-proto``: the code goes to
    ``out_root/src/heron_proto/heron/`` (replacing whatever was there) and the baseline to
    ``out_root/wire_baseline.json``. The committed baseline is always the one checked against.
    """
    files = proto_files(proto_root)
    with tempfile.TemporaryDirectory(prefix="heron-proto-") as tmp:
        work = Path(tmp)
        generated_dir = work / "python"
        generated_dir.mkdir()
        descriptor_set = _run_protoc(proto_root, files, generated_dir)
        current = wire_of(descriptor_set)
        descriptor_set.unlink()

        baseline = _read_baseline(PACKAGE_ROOT / BASELINE_NAME)
        problems = breaking_changes(baseline, current)
        if problems and not accept_breaking:
            raise GenerationError(
                "these changes break the wire (additive changes only: add new fields with new "
                "numbers; reserve the number and name of a field you drop):\n  "
                + "\n  ".join(problems)
            )
        generated = generated_dir / PROTO_TOP_PACKAGE
        _fix_tree(generated)

        target = out_root / GENERATED_SUBDIR / PROTO_TOP_PACKAGE
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(generated, target)
        wire = current if accept_breaking else _merged(baseline, current)
        (out_root / BASELINE_NAME).write_text(
            json.dumps(wire, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )


def generated_files(root: Path) -> dict[str, bytes]:
    """The generated files under an output root (as ``generate`` writes them), by relative path."""
    found: dict[str, bytes] = {}
    if (root / BASELINE_NAME).is_file():
        found[BASELINE_NAME] = (root / BASELINE_NAME).read_bytes()
    code = root / GENERATED_SUBDIR / PROTO_TOP_PACKAGE
    for path in sorted(code.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def differences(committed_root: Path, fresh_root: Path) -> list[str]:
    """The files that differ between two output roots (missing on either side counts)."""
    committed = generated_files(committed_root)
    fresh = generated_files(fresh_root)
    return sorted(
        name for name in committed.keys() | fresh.keys() if committed.get(name) != fresh.get(name)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Regenerate heron_proto's Python code from the repository's proto/ tree."
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=PACKAGE_ROOT,
        help="write under this directory instead of libs/heron-proto",
    )
    parser.add_argument(
        "--proto-root",
        type=Path,
        default=PROTO_ROOT,
        help="read the .proto files from here instead of the repository's proto/",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only report whether the committed code is up to date (exit 1 if not)",
    )
    parser.add_argument(
        "--accept-breaking",
        action="store_true",
        help="allow a change that breaks the wire and reset the baseline (only when an issue says so)",
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            with tempfile.TemporaryDirectory(prefix="heron-proto-check-") as tmp:
                generate(Path(tmp), proto_root=args.proto_root)
                stale = differences(PACKAGE_ROOT, Path(tmp))
            if stale:
                sys.stderr.write(
                    "out of date; run `uv run python libs/heron-proto/generate.py`:\n  "
                    + "\n  ".join(stale)
                    + "\n"
                )
                return 1
            return 0
        generate(args.out, proto_root=args.proto_root, accept_breaking=args.accept_breaking)
    except GenerationError as exc:
        sys.stderr.write(f"generate.py: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
