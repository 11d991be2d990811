"""The `mailstack` commands: parse the flags, call the gateway, print the answer.

Output is a table at a terminal and JSON otherwise (a pipe, a file, a script); `--json` and
`--table` choose. Exit codes: 0 done, 1 the gateway refused or failed the request, 2 a usage or
configuration error, 3 the gateway did not answer.
"""

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.utils import parseaddr
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from mailstack_cli.client import ApiError, GatewayClient, GatewayUnreachableError
from mailstack_cli.config import NotConfiguredError, resolve
from mailstack_cli.follow import Change, Follower
from mailstack_cli.render import Output, address, is_terminal

Json = dict[str, Any]


class Exit(IntEnum):
    OK = 0
    REFUSED = 1
    USAGE = 2
    UNREACHABLE = 3


app = typer.Typer(
    name="mailstack",
    help="Send and follow emails, and operate mailstack, through the gateway's API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="API keys (admin scope).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

# Tests hand the client a fake transport here; None: real HTTP.
TRANSPORT: httpx.BaseTransport | None = None
# Tests replace the pause between polls.
sleep: Callable[[float], None] = time.sleep

JsonFlag = Annotated[bool, typer.Option("--json", help="JSON output (the default off a terminal)")]
TableFlag = Annotated[bool, typer.Option("--table", help="Table output, even off a terminal")]


class Settings:
    def __init__(self, url: str | None, api_key: str | None, env_file: Path | None) -> None:
        self.url, self.api_key, self.env_file = url, api_key, env_file


@app.callback()
def configure(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(help="The gateway's URL (env: MAILSTACK_URL or GATEWAY_URL; else stack.env)"),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(help="An API key (env: MAILSTACK_API_KEY or API_KEY; else stack.env)"),
    ] = None,
    env_file: Annotated[
        Path | None,
        typer.Option(
            help="A stack.env to read (env: MAILSTACK_STACK_ENV_FILE; "
            "default: the nearest .stack/stack.env)"
        ),
    ] = None,
) -> None:
    ctx.obj = Settings(url, api_key, env_file)


def _output(as_json: bool, as_table: bool) -> Output:
    if as_json and as_table:
        raise typer.BadParameter("--json and --table exclude each other")
    return Output(as_json=as_json or (not as_table and not is_terminal()))


def _describe(error: ApiError) -> tuple[str, list[str]]:
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        details = [f"{item.get('field')}: {item.get('message')}" for item in body["errors"]]
        return f"the gateway refused the request (HTTP {error.status}):", details
    if isinstance(body, dict) and "error" in body:
        return f"HTTP {error.status} {body['error']}: {body.get('message', '')}", []
    return f"HTTP {error.status}: {body}", []


@contextmanager
def _gateway(ctx: typer.Context, out: Output) -> Iterator[GatewayClient]:
    """The client for the configured gateway; the gateway's errors end the command."""
    settings: Settings = ctx.obj
    try:
        target = resolve(settings.url, settings.api_key, settings.env_file)
    except NotConfiguredError as error:
        out.error(str(error))
        raise typer.Exit(Exit.USAGE) from error
    client = GatewayClient(target.url, target.api_key, transport=TRANSPORT)
    try:
        yield client
    except ApiError as error:
        message, details = _describe(error)
        if out.as_json:
            out.data({"status": error.status, "body": error.body})
        out.error(message, details)
        raise typer.Exit(Exit.REFUSED) from error
    except GatewayUnreachableError as error:
        out.error(str(error))
        raise typer.Exit(Exit.UNREACHABLE) from error
    finally:
        client.close()


def _fetch(
    ctx: typer.Context, as_json: bool, as_table: bool, call: Callable[[GatewayClient], Json]
) -> tuple[Output, Json | None]:
    """The output chosen, and the gateway's answer to `call` for a table; None once it was
    printed as JSON."""
    out = _output(as_json, as_table)
    with _gateway(ctx, out) as gateway:
        answer = call(gateway)
    if out.as_json:
        out.data(answer)
        return out, None
    return out, answer


def _address(value: str) -> Json:
    """`Name <a@example.com>` or `a@example.com` as the API's address object."""
    name, email = parseaddr(value)
    if not email:
        raise typer.BadParameter(f"not an email address: {value!r}")
    return {"email": email, "name": name} if name else {"email": email}


def _email_body(file: Path | None, fields: Json, recipients: dict[str, list[str] | None]) -> Json:
    body: Json = {}
    if file is not None:
        text = sys.stdin.read() if str(file) == "-" else file.read_text()
        try:
            body = json.loads(text)
        except json.JSONDecodeError as error:
            raise typer.BadParameter(f"{file} is not JSON: {error}") from error
        if not isinstance(body, dict):
            raise typer.BadParameter(f"{file} holds no JSON object")
    body |= {name: value for name, value in fields.items() if value is not None}
    for name, values in recipients.items():
        if values:
            body[name] = [_address(value) for value in values]
    return body


@app.command()
def send(
    ctx: typer.Context,
    sender: Annotated[
        str | None, typer.Option("--from", help="`Name <address>` or an address")
    ] = None,
    to: Annotated[list[str] | None, typer.Option(help="A recipient; repeat for more")] = None,
    cc: Annotated[list[str] | None, typer.Option(help="Repeatable")] = None,
    bcc: Annotated[list[str] | None, typer.Option(help="Repeatable")] = None,
    subject: Annotated[str | None, typer.Option()] = None,
    text: Annotated[str | None, typer.Option(help="The plain-text body")] = None,
    html: Annotated[str | None, typer.Option(help="The HTML body")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Repeatable")] = None,
    file: Annotated[
        Path | None,
        typer.Option(help="A JSON body as POST /v1/emails takes it (- for stdin); flags win"),
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Makes a retry safe: the same key answers the same email")
    ] = None,
    as_json: JsonFlag = False,
    as_table: TableFlag = False,
) -> None:
    """Send an email; prints its id and status. Every validation error comes at once."""
    fields: Json = {"from": _address(sender) if sender else None, "subject": subject}
    fields |= {"text": text, "html": html, "tags": tag or None}
    body = _email_body(file, fields, {"to": to, "cc": cc, "bcc": bcc})
    out, accepted = _fetch(
        ctx, as_json, as_table, lambda gateway: gateway.send(body, idempotency_key)
    )
    if accepted is not None:
        out.record([("id", accepted["id"]), ("status", accepted["status"])])


@app.command()
def get(
    ctx: typer.Context,
    email_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: JsonFlag = False,
    as_table: TableFlag = False,
) -> None:
    """One email: its status and what it was sent with."""
    out, email = _fetch(ctx, as_json, as_table, lambda gateway: gateway.email(email_id))
    if email is None:
        return
    out.record(
        [
            ("id", email["id"]),
            ("status", email["status"]),
            ("provider", email.get("provider")),
            ("provider message id", email.get("provider_message_id")),
            ("from", address(email.get("from"))),
            ("to", [address(item) for item in email.get("to", [])]),
            ("cc", [address(item) for item in email.get("cc", [])]),
            ("bcc", [address(item) for item in email.get("bcc", [])]),
            ("subject", email.get("subject")),
            ("tags", email.get("tags")),
            ("attempts", email.get("attempts")),
            ("last error", email.get("last_error")),
            ("send at", email.get("send_at")),
            ("created", email.get("created_at")),
            ("updated", email.get("updated_at")),
        ]
    )


@app.command()
def history(
    ctx: typer.Context,
    email_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: JsonFlag = False,
    as_table: TableFlag = False,
) -> None:
    """One email's history, oldest first."""
    out, found = _fetch(ctx, as_json, as_table, lambda gateway: gateway.history(email_id))
    if found is None:
        return
    rows = [
        (entry["at"], entry["status"], entry.get("provider"), entry.get("detail"))
        for entry in found["history"]
    ]
    out.table(["at", "status", "provider", "detail"], rows, title=f"email {found['id']}")


@app.command("list")
def list_emails(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only emails in this status")] = None,
    tag: Annotated[str | None, typer.Option(help="Only emails carrying this tag")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    cursor: Annotated[str | None, typer.Option(help="The next page (printed after a page)")] = None,
    as_json: JsonFlag = False,
    as_table: TableFlag = False,
) -> None:
    """A page of your emails, newest first."""
    wanted = status.upper() if status else None
    out, page = _fetch(
        ctx, as_json, as_table, lambda gateway: gateway.emails(wanted, tag, limit, cursor)
    )
    if page is None:
        return
    rows = [
        (item["id"], item["status"], item["subject"], item.get("provider"), item["created_at"])
        for item in page["items"]
    ]
    out.table(["id", "status", "subject", "provider", "created"], rows)
    if page.get("next_cursor"):
        out.note(f"more: mailstack list --cursor {page['next_cursor']}")


def _change_line(change: Change) -> str:
    email = change.email
    subject = json.dumps(email.get("subject", ""), ensure_ascii=False)
    if change.before is None:
        return f"{email['updated_at']}  {email['id']}  new      {change.after:<10} {subject}"
    provider = f" via {email['provider']}" if email.get("provider") else ""
    moved = f"{change.before} -> {change.after}"
    return f"{email['updated_at']}  {email['id']}  status   {moved}{provider}"


@app.command()
def tail(
    ctx: typer.Context,
    tag: Annotated[str | None, typer.Option(help="Only emails carrying this tag")] = None,
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between two looks at the list")
    ] = 2.0,
    polls: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many looks (default: Ctrl-C)")
    ] = None,
    as_json: JsonFlag = False,
    as_table: TableFlag = False,
) -> None:
    """Follow new emails and their status changes until Ctrl-C: a line for each.

    With --json, one JSON object a line: {"event": "new"|"status", "before": ..., "email": ...}.
    """
    out = _output(as_json, as_table)
    with _gateway(ctx, out) as gateway:
        follower = Follower(lambda cursor: gateway.emails(tag=tag, limit=200, cursor=cursor))
        looked = 0
        try:
            while polls is None or looked < polls:
                if looked:
                    sleep(interval)
                for change in follower.poll():
                    if out.as_json:
                        event = "new" if change.before is None else "status"
                        out.line({"event": event, "before": change.before, "email": change.email})
                    else:
                        out.say(_change_line(change))
                looked += 1
        except KeyboardInterrupt:
            return


@keys_app.command("create")
def create_key(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Default: your key's own tenant")] = None,
    name: Annotated[str, typer.Option()] = "api key",
    scope: Annotated[
        list[str] | None,
        typer.Option(help="emails:send, emails:read or admin; repeat (default: send and read)"),
    ] = None,
    expires_in_days: Annotated[float | None, typer.Option()] = None,
    create_tenant: Annotated[bool, typer.Option(help="Create the tenant if it is missing")] = False,
    as_json: JsonFlag = False,
    as_table: TableFlag = False,
) -> None:
    """Create an API key; it is shown this once."""
    request: Json = {"name": name, "create_tenant": create_tenant}
    optional = {"tenant": tenant, "scopes": scope, "expires_in_days": expires_in_days}
    request |= {key: value for key, value in optional.items() if value is not None}
    out, created = _fetch(ctx, as_json, as_table, lambda gateway: gateway.create_key(request))
    if created is None:
        return
    out.record(
        [
            ("id", created["id"]),
            ("tenant", created["tenant"]),
            ("name", created["name"]),
            ("scopes", created["scopes"]),
            ("expires", created.get("expires_at")),
        ]
    )
    out.note("shown once; store it now:")
    out.say(created["key"])


def _key_rows(items: list[Json]) -> list[tuple[Any, ...]]:
    return [
        (
            item["id"],
            item["tenant"],
            item["name"],
            item["scopes"],
            item["created_at"],
            item.get("expires_at"),
            item.get("revoked_at"),
            item.get("last_used_at"),
        )
        for item in items
    ]


KEY_COLUMNS = ["id", "tenant", "name", "scopes", "created", "expires", "revoked", "last used"]


@keys_app.command("list")
def list_keys(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys")] = None,
    as_json: JsonFlag = False,
    as_table: TableFlag = False,
) -> None:
    """API keys of every tenant, or of one; never their secrets."""
    out, found = _fetch(ctx, as_json, as_table, lambda gateway: gateway.keys(tenant))
    if found is not None:
        out.table(KEY_COLUMNS, _key_rows(found["items"]))


@keys_app.command("revoke")
def revoke_key(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID")],
    as_json: JsonFlag = False,
    as_table: TableFlag = False,
) -> None:
    """Revoke a key by its id (every gateway stops taking it within AUTH_CACHE_SECONDS)."""
    out, revoked = _fetch(ctx, as_json, as_table, lambda gateway: gateway.revoke_key(key_id))
    if revoked is not None:
        out.table(KEY_COLUMNS, _key_rows([revoked]))


@app.command()
def breakers(ctx: typer.Context, as_json: JsonFlag = False, as_table: TableFlag = False) -> None:
    """Each provider's circuit breaker, as the processors share it (admin scope)."""
    out, found = _fetch(ctx, as_json, as_table, lambda gateway: gateway.breakers())
    if found is None:
        return
    if not found["items"]:
        out.say("no provider has failed yet: every breaker is closed")
        return
    rows = [
        (
            item["provider"],
            item["state"],
            item["consecutive_failures"],
            item.get("opened_until"),
            item.get("last_error"),
            item["updated_at"],
        )
        for item in found["items"]
    ]
    columns = ["provider", "state", "failures", "open until", "last error", "updated"]
    out.table(columns, rows)


@app.command("dead-letters")
def dead_letters(
    ctx: typer.Context, as_json: JsonFlag = False, as_table: TableFlag = False
) -> None:
    """How many messages the dead-letter queue holds, and its recent redrives (admin scope)."""
    out, found = _fetch(ctx, as_json, as_table, lambda gateway: gateway.dead_letters())
    if found is None:
        return
    out.record([("messages", found["messages"]), ("in flight", found["messages_in_flight"])])
    rows = [
        (item["started_at"], item["status"], item["messages_moved"], item["messages_to_move"],
         item.get("failure_reason"))
        for item in found["redrives"]
    ]  # fmt: skip
    if rows:
        out.table(["started", "status", "moved", "to move", "failure"], rows, title="redrives")


def _wait_for_redrive(gateway: GatewayClient, seconds: float, interval: float) -> Json:
    """The newest redrive once it has stopped running (or as it is after `seconds`)."""
    deadline = time.monotonic() + seconds
    while True:
        redrives = gateway.dead_letters()["redrives"]
        newest: Json = redrives[0] if redrives else {"status": "RUNNING", "messages_moved": 0}
        if newest["status"] != "RUNNING" or time.monotonic() >= deadline:
            return newest
        sleep(interval)


@app.command()
def redrive(
    ctx: typer.Context,
    wait: Annotated[
        bool, typer.Option(help="Wait until the move ends and report what it moved")
    ] = True,
    timeout: Annotated[float, typer.Option(min=0, help="Seconds to wait at most")] = 300.0,
    max_per_second: Annotated[
        int | None, typer.Option(min=1, max=500, help="SQS's rate limit for the move")
    ] = None,
    as_json: JsonFlag = False,
    as_table: TableFlag = False,
) -> None:
    """Move every message of the dead-letter queue back to the email queue (admin scope)."""
    out = _output(as_json, as_table)
    with _gateway(ctx, out) as gateway:
        started = gateway.redrive(max_per_second)
        result: Json = {"started": started}
        if wait:
            result["redrive"] = _wait_for_redrive(gateway, timeout, interval=0.5)
    if out.as_json:
        out.data(result)
        return
    fields = [("messages to move", started["messages_to_move"])]
    if done := result.get("redrive"):
        fields += [("status", done["status"]), ("messages moved", done["messages_moved"])]
        fields += [("failure", done.get("failure_reason"))] if done.get("failure_reason") else []
    else:
        fields += [("task", started["task_handle"])]
    out.record(fields)
    if done and done["status"] not in ("COMPLETED", "RUNNING"):
        raise typer.Exit(Exit.REFUSED)


def main() -> None:
    app()
