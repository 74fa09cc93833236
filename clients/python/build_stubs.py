"""Generates the gRPC stubs of ``proto/`` into a directory (``wasmos/v1/``).

Run by the package's build (``setup.py``) and by the test that checks the
installed stubs are those ``proto/`` makes today: they are never edited by
hand and never stale.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = HERE.parent.parent / "proto" / "proto"


def generate(out: Path) -> list:
    """Writes ``wasmos/v1/*_pb2*.py`` under ``out``; returns their paths."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(PROTO.glob("wasmos/v1/*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files under {PROTO}")
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--pyi_out={out}",
        *map(str, protos),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("grpc_tools.protoc failed on " + " ".join(args[3:]))
    package = out / "wasmos" / "v1"
    (package / "__init__.py").write_text('"""Generated from proto/wasmos/v1: do not edit."""\n')
    return sorted(package.glob("*.py*"))
