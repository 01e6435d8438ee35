"""Regenerate the Python stubs in hydra/v1/ from proto/.

Usage: python scripts/gen_proto.py [--check]

With --check, generate into a temporary folder and exit 1 if anything differs
from what is checked in (CI runs this).
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGE_DIR = Path("hydra") / "v1"
INIT_TEXT = '"""Generated protobuf and gRPC stubs for hydra.v1. Never edit by hand."""\n'


def generate(out_root: Path) -> None:
    """Run protoc (with mypy-protobuf stubs) on every proto into out_root."""
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    (out_root / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out_root / PACKAGE_DIR / "__init__.py").write_text(INIT_TEXT)


def main() -> int:
    check = "--check" in sys.argv[1:]
    if not check:
        target = ROOT / PACKAGE_DIR
        shutil.rmtree(target, ignore_errors=True)
        generate(ROOT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh, current = Path(tmp) / PACKAGE_DIR, ROOT / PACKAGE_DIR
        diff = filecmp.dircmp(fresh, current, ignore=["__pycache__"])
        stale = diff.left_only + diff.right_only + diff.diff_files
        if stale:
            print(
                f"hydra/v1 is out of date with proto/ ({', '.join(sorted(stale))}); "
                "run: python scripts/gen_proto.py",
                file=sys.stderr,
            )
            return 1
    print("hydra/v1 matches proto/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
