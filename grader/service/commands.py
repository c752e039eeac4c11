"""The command line of the server: `grader serve` and `grader roster`."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from grader.errors import UsageError
from grader.service.config import CONFIG_NAME
from grader.service.store import USER_ID, Store

_DATA_HELP = (f"the server's data folder: {CONFIG_NAME}, the roster and records "
              "(server.sqlite), the gradebook, the uploads (default: this folder)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add `serve` and `roster` to the `grader` command line."""
    serve = sub.add_parser(
        "serve", help="run the submission server of a course",
        description="Serve a course: students sign in with their roster token, upload "
                    "notebooks and read their feedback; instructors see a dashboard per "
                    "assignment, download grades and regrade. Submissions are graded as by "
                    "`grader grade`, in the same sandbox, a few at once, here or on a Dask "
                    "cluster (--cluster). Reads DATA/"
                    f"{CONFIG_NAME} (the assignments, deadlines, late policy, rate limits; "
                    "see the README) and keeps every record in DATA. A server stopped while "
                    "submissions wait grades them when it starts again.")
    serve.add_argument("--data", type=Path, default=Path("."), metavar="DIR", help=_DATA_HELP)
    serve.add_argument("--config", type=Path, metavar="FILE",
                       help=f"course configuration (default: DATA/{CONFIG_NAME})")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only; "
                            "put an https proxy in front to serve others)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--cluster", metavar="ADDRESS",
                       help="grade on a Dask cluster instead of this machine's kernels, in "
                            f"place of {CONFIG_NAME}'s `cluster`: the scheduler's address "
                            "(tcp://HOST:8786, tls://...; its workers started with --resources "
                            "KERNELS=N), or local:N for N worker processes here")
    serve.add_argument("--demo", action="store_true",
                       help="make DATA a demo of the bundled course if it is not one yet "
                            "(two students, an instructor) and print their fresh tokens")
    serve.set_defaults(run=_cmd_serve)

    roster = sub.add_parser(
        "roster", help="add students and instructors to a server's roster",
        description="Each person signs in with a token printed once, here; only its hash is "
                    "stored. Give each student theirs privately.")
    roster.add_argument("--data", type=Path, default=Path("."), metavar="DIR", help=_DATA_HELP)
    actions = roster.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add one person and print their token")
    add.add_argument("id", help="their id: letters, digits, . _ @ -; at most 64 characters")
    add.add_argument("--name", help="the name pages show (default: the id)")
    add.add_argument("--instructor", action="store_true", help="an instructor, not a student")
    add.add_argument("--new-token", action="store_true",
                     help="someone on the roster already: a new token, the old one stops "
                          "working")
    imported = actions.add_parser(
        "import", help="add everyone of a CSV file and print id,name,role,token",
        description="Read a CSV file with a header row: an `id` column, optionally `name` and "
                    "`role` (student or instructor). Prints a CSV of everyone's token, once.")
    imported.add_argument("csv", type=Path, metavar="ROSTER.csv")
    actions.add_parser("list", help="print the roster (never tokens: they are not kept)")
    roster.set_defaults(run=_cmd_roster)


def _valid_id(user_id: str) -> str:
    if not USER_ID.fullmatch(user_id):
        raise UsageError(f"{user_id!r} is not a roster id: use letters, digits, . _ @ -, at "
                         "most 64 characters, not starting with a dot")
    return user_id


def _cmd_roster(args: argparse.Namespace) -> int:
    args.data.mkdir(parents=True, exist_ok=True)
    store = Store(args.data / "server.sqlite")
    try:
        if args.action == "add":
            role = "instructor" if args.instructor else "student"
            token = store.add_user(_valid_id(args.id), args.name or args.id, role,
                                   replace=args.new_token)
            print(f"token for {args.id} ({role}), shown only now: {token}")
        elif args.action == "import":
            _import(store, args.csv)
        else:
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(["id", "name", "role"])
            for user in store.users():
                writer.writerow([user.id, user.name, user.role])
    finally:
        store.close()
    return 0


def _import(store: Store, path: Path) -> None:
    """Add everyone of a roster CSV, checked whole before anyone is added."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    if not rows or "id" not in rows[0]:
        raise UsageError(f"{path} needs a header row with an `id` column")
    known = {u.id for u in store.users()}
    people = []
    for number, row in enumerate(rows, start=2):
        user_id, role = _valid_id((row.get("id") or "").strip()), (row.get("role") or
                                                                    "student").strip()
        if role not in ("student", "instructor"):
            raise UsageError(f"{path}, line {number}: role {role!r} is neither student nor "
                             "instructor")
        if user_id in known:
            raise UsageError(f"{path}, line {number}: {user_id!r} is on the roster already")
        known.add(user_id)
        people.append((user_id, (row.get("name") or user_id).strip(), role))
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["id", "name", "role", "token"])
    for user_id, name, role in people:
        writer.writerow([user_id, name, role, store.add_user(user_id, name, role)])


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from grader.service.app import make_demo, serve
    except ImportError as exc:
        raise UsageError(f"the server needs the optional packages of backprop-grader[server] "
                         f"(pip install 'backprop-grader[server]'): {exc}") from None
    if args.demo:
        people = make_demo(args.data)
        print(f"Demo course in {args.data.resolve()}; sign in at http://{args.host}:"
              f"{args.port}/login with one of these tokens:")
        for user_id, role, token in people:
            print(f"  {user_id:6} {role:11} {token}", flush=True)
    serve(args.data, args.config, args.host, args.port, args.cluster)
    return 0

