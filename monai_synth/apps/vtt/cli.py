"""Command line of the reader study: ``python -m monai_synth.vtt serve ...`` and ``... report ...``.

::

    python -m monai_synth.vtt serve --real PATH --synthetic PATH --db study.db [--host 127.0.0.1] [--port 8000]
        [--n N] [--seed S] [--ask-lesion]
    python -m monai_synth.vtt report --db study.db --out DIR [--tracking-uri URI] [--experiment NAME]
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from collections.abc import Sequence

__all__ = ["main", "parser"]

logger = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    """The argument parser (subcommands ``serve`` and ``report``)."""
    ap = argparse.ArgumentParser(
        prog="python -m monai_synth.vtt", description="Blinded reader study (Visual Turing Test)."
    )
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the reading web app", description="Serve the blinded reading web app.")
    s.add_argument("--real", required=True, help="folder (PNG/JPEG/DICOM, recursive) or datalist JSON of real images")
    s.add_argument("--synthetic", required=True, help="folder or datalist JSON of synthetic images")
    s.add_argument("--db", required=True, help="SQLite study database (created; reopened to resume)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any free port)")
    s.add_argument("--n", type=int, default=None, help="images per reader, even (default: the largest balanced set)")
    s.add_argument("--seed", type=int, default=0, help="seed of the study set and of the reading orders")
    s.add_argument("--ask-lesion", action="store_true", help="also ask whether a lesion is present")
    r = sub.add_parser("report", help="write the study report", description="Write the reader-study report.")
    r.add_argument("--db", required=True, help="SQLite study database")
    r.add_argument("--out", required=True, help="folder for reader_study.json/.png and the CSV files")
    r.add_argument("--tracking-uri", default=None, help="MLflow URI (sqlite:///... or http://...): log an MLflow run")
    r.add_argument("--experiment", default="reader_study", help="MLflow experiment (default reader_study)")
    return ap


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _serve(args: argparse.Namespace) -> int:
    from monai_synth.apps.vtt.sequence import new_token
    from monai_synth.apps.vtt.server import StudyServer, create_app
    from monai_synth.apps.vtt.study import open_study

    db = open_study(args.real, args.synthetic, args.db, n=args.n, seed=args.seed, ask_lesion=args.ask_lesion)
    admin_token = new_token()
    server = StudyServer(create_app(db, admin_token), host=args.host, port=args.port)
    if not _is_loopback(args.host):
        logger.warning("listening on %s: anyone on the network can reach the study (plain HTTP).", args.host)
    wildcard = args.host in ("0.0.0.0", "::")
    url = f"http://127.0.0.1:{server.port}" if wildcard else server.url
    lan = f"  network: http://<this machine's address>:{server.port}/\n" if wildcard else ""
    sys.stdout.write(
        f"Reader study: {len(db.items())} images per reader, answers in {args.db}\n"
        f"  readers: {url}/\n{lan}  admin:   {url}/admin?token={admin_token}\n"
        "  stop:    Ctrl+C (readers resume by name)\n"
    )
    sys.stdout.flush()
    server.run()
    return 0


def _report(args: argparse.Namespace) -> int:
    from monai_synth.apps.vtt.report import write_report

    files = write_report(args.db, args.out, tracking_uri=args.tracking_uri, experiment=args.experiment)
    lines = [f"  {p}" for p in files[:4]]
    if files.run_id:
        lines.append(f"  MLflow run {files.run_id} ({args.tracking_uri})")
    sys.stdout.write("Reader-study report:\n" + "\n".join(lines) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; a user error (bad path, impossible ``--n``, another study's database) prints one line and
    returns 2."""
    args = parser().parse_args(argv)
    try:
        return _serve(args) if args.command == "serve" else _report(args)
    except (FileNotFoundError, ValueError, OSError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
