"""The promenade command, compatible with the original tool's command line.

Each subcommand is one function decorated with :func:`subcommand`: it receives its argparse
parser, declares its arguments and returns the function that runs it. User mistakes
(:class:`PromenadeError`) are printed without a traceback and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from . import pki, server
from .config import PKI_CATALOG
from .documents import check_envelopes, load_files
from .errors import PromenadeError
from .fileio import SECRET_MODE, atomic_write
from .rendering import render

Runner = Callable[[argparse.Namespace], None]
_SUBCOMMANDS: list[Callable[[argparse.ArgumentParser], Runner]] = []


def subcommand(define: Callable[[argparse.ArgumentParser], Runner]):
    """Register a subcommand; its name is the function name with ``_`` turned into ``-``."""
    _SUBCOMMANDS.append(define)
    return define


def existing_dir(value: str) -> str:
    """argparse type: a directory that exists (as the original requires for ``-o``)."""
    if not os.path.isdir(value):
        raise argparse.ArgumentTypeError(f"directory {value!r} does not exist")
    return value


@subcommand
def generate_certs(parser: argparse.ArgumentParser) -> Runner:
    """Generate certificates.yaml (CAs, certificates, key pairs) from the PKICatalogs of FILES."""
    parser.add_argument("-o", "--output-dir", required=True, type=existing_dir,
                        help="existing directory to write certificates.yaml into")
    parser.add_argument("files", nargs="+", metavar="CONFIG_FILES", help="site YAML files")

    def run(args: argparse.Namespace) -> None:
        docs = load_files(args.files)
        problems = check_envelopes(docs)
        if problems:
            raise PromenadeError(problems)
        rendered = render(docs, strict=False).documents
        catalogs = [doc for doc in rendered if doc.schema == PKI_CATALOG]
        fulfilled = pki.fulfil_all(*pki.plan(catalogs, rendered))
        target = os.path.join(args.output_dir, "certificates.yaml")
        atomic_write(target, pki.certificates_yaml(fulfilled, include_provided=True), SECRET_MODE)
        if args.verbose:
            for request, material in fulfilled:
                how = "reused from the site" if material["provided"] else "generated"
                print(f"{request['kind']} {request['name']}: {how}", file=sys.stderr)
        print(f"wrote {target} ({len(fulfilled)} CAs, certificates and key pairs)", file=sys.stderr)

    return run


@subcommand
def serve(parser: argparse.ArgumentParser) -> Runner:
    """Serve a build directory and the join-scripts API over HTTP(S) until SIGTERM."""
    server.add_arguments(parser)
    return server.run


@subcommand
def build_all(parser: argparse.ArgumentParser) -> Runner:
    """Build genesis.sh and join-<node>.sh for every KubernetesNode from FILES (site + certificates)."""
    parser.add_argument("-o", "--output-dir", required=True, type=existing_dir,
                        help="existing directory to write the scripts into")
    parser.add_argument("--validators", action="store_true",
                        help="also write validate-genesis.sh, validate-<node>.sh and validate-cluster.sh")
    parser.add_argument("--leave-kubectl", action="store_true",
                        help="join scripts keep kubectl and the admin credentials on the node")
    parser.add_argument("files", nargs="+", metavar="CONFIG_FILES", help="site YAML files and certificates.yaml")

    def run(args: argparse.Namespace) -> None:
        from . import engine
        from .config import SiteConfig
        from .tasks.render import render_and_validate

        config = SiteConfig(render_and_validate(args.files, strict=True).documents)
        workspace = engine.default_workspace()
        written = []

        def write(name: str, script) -> None:  # each script as soon as it is made: they can be 100+ MB
            atomic_write(os.path.join(args.output_dir, name), script, SECRET_MODE)
            written.append(name)

        write("genesis.sh", engine.render_script(config, None, workspace=workspace))
        shared = engine.shared_payload(config, "join", workspace) if config.nodes else None
        for name in config.nodes:
            write(f"join-{name}.sh", engine.render_script(config, name, leave_kubectl=args.leave_kubectl,
                                                          workspace=workspace, shared=shared))
        if args.validators:
            write("validate-genesis.sh", engine.render_validate_script(config))
            write("validate-cluster.sh", engine.render_validate_script(config, cluster=True))
            for name in config.nodes:
                write(f"validate-{name}.sh", engine.render_validate_script(config, name))
        print(f"wrote {len(written)} scripts to {args.output_dir}", file=sys.stderr)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promenade", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print more detail (generate-certs: every CA, certificate and key pair)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for define in _SUBCOMMANDS:
        doc = (define.__doc__ or "").strip()
        sub = commands.add_parser(define.__name__.replace("_", "-"), help=doc, description=doc)
        sub.set_defaults(run=define(sub))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except PromenadeError as exc:
        print(exc.report(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
