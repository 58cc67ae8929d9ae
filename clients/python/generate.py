#!/usr/bin/env python3
"""Regenerates the protobuf module from proto/feedgate/v1/feedgate.proto.

Run it after changing the .proto (the committed files must match; tests/test_generated.py fails
when they are stale):

    python clients/python/generate.py

Needs grpcio-tools (its bundled protoc), pinned in pyproject.toml's `test` extra:
`pip install grpcio-tools==1.85.1`.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
PROTO = "feedgate/v1/feedgate.proto"
OUT = HERE / "src"
# What protoc writes for PROTO, relative to the output directory.
GENERATED = ["feedgate/v1/feedgate_pb2.py", "feedgate/v1/feedgate_pb2.pyi"]


def generate(out: pathlib.Path) -> None:
    """Runs protoc (grpcio-tools') on the schema, writing GENERATED under `out`."""
    from grpc_tools import protoc

    args = ["protoc", f"-I{PROTO_ROOT}", f"--python_out={out}", f"--pyi_out={out}", PROTO]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")


def stale_files() -> list[str]:
    """The committed generated files that differ from a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = pathlib.Path(tmp)
        generate(fresh)
        return [
            name
            for name in GENERATED
            if not (OUT / name).exists()
            or (OUT / name).read_bytes() != (fresh / name).read_bytes()
        ]


def main() -> int:
    if "--check" in sys.argv[1:]:
        stale = stale_files()
        for name in stale:
            print(f"stale: clients/python/src/{name}; run python clients/python/generate.py")
        return 1 if stale else 0
    generate(OUT)
    for name in GENERATED:
        print(f"wrote clients/python/src/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
