"""`tusk identity quarantine list|release TYPE:VALUE`: the over-merge guard from the shell."""

from __future__ import annotations

import argparse
import urllib.error
import urllib.request
from typing import Any

import orjson

from stream.runtime import variables


def _post(url: str, body: dict[str, Any], timeout: float = 10.0) -> tuple[int, Any]:
    from stream.cli.base import CliError

    token = variables.given("TUSK_API_TOKEN")
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=orjson.dumps(body), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            return e.code, orjson.loads(e.read())
        except orjson.JSONDecodeError:
            return e.code, {}
    except (urllib.error.URLError, OSError) as e:
        raise CliError(f"no Tusk worker answers at {url}: {e}.") from e


def cmd_quarantine(args: argparse.Namespace) -> int:
    from stream.cli.base import CliError, http_get

    base = args.url.rstrip("/")
    if args.action == "list":
        status, body = http_get(f"{base}/identity/quarantine")
        if status != 200:
            raise CliError(f"the worker answered {status}: {body.get('message', body)}")
        for r in body["quarantined"]:
            if r.get("reason") == "unlinked":
                print(f"{r['type']}:{r['value']}\tunlinked")
            else:
                print(f"{r['type']}:{r['value']}\t{r['distinct_people']} people > {r['threshold']}")
        if not body["quarantined"]:
            print("no identifier is quarantined")
        return 0
    if not args.identifier:
        raise CliError("release needs the identifier, TYPE:VALUE (e.g. device_id:kiosk-1).")
    status, body = _post(f"{base}/identity/quarantine/release", {"identifier": args.identifier})
    if status != 202:
        raise CliError(f"cannot release {args.identifier!r}: {body.get('message', status)}")
    print(f"release of {body['identifier']} requested")
    return 0


def cmd_unlink(args: argparse.Namespace) -> int:
    from stream.cli.base import CliError

    status, body = _post(f"{args.url.rstrip('/')}/identity/unlink", {"identifier": args.identifier})
    if status != 202:
        raise CliError(f"cannot unlink {args.identifier!r}: {body.get('message', status)}")
    print(f"unlink of {body['identifier']} requested (op {body['op']}); the outcome is the `unlinked` "
          f"record with this op on tusk.profile-changes; the value stays blocked until "
          f"`tusk identity quarantine release {body['identifier']}`")
    return 0


def register(sub: Any, url_default: str) -> None:
    idn = sub.add_parser("identity", help="the identity graph: over-merge quarantine, unlink")
    ids = idn.add_subparsers(dest="identity_cmd", required=True)
    q = ids.add_parser("quarantine", help="list quarantined identifiers, or release one")
    q.add_argument("action", choices=["list", "release"])
    q.add_argument("identifier", nargs="?", help="TYPE:VALUE, for release")
    q.add_argument("--url", default=url_default, help="a worker's HTTP address (TUSK_URL)")
    q.set_defaults(func=cmd_quarantine)
    u = ids.add_parser("unlink", help="remove a wrong identifier and split the profile it glued together")
    u.add_argument("identifier", help="TYPE:VALUE, e.g. email:test@test.com")
    u.add_argument("--url", default=url_default, help="a worker's HTTP address (TUSK_URL)")
    u.set_defaults(func=cmd_unlink)
