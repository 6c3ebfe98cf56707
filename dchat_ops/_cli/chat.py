"""The terminal chat client."""

from __future__ import annotations

import sys
from typing import Any

import click

from dchat_ops._cli.app import Ctx, cli, pass_ctx
from dchat_ops.errors import ChatError, DchatOpsError

# --- chat ----------------------------------------------------------------------------------------------

CHAT_HELP = """commands: /join ROOM  /leave ROOM  /say ROOM TEXT  /dm USER TEXT  /group NAME TEXT
          /mkgroup NAME USER...  /groups  /members NAME  /add-member NAME USER  /remove-member NAME USER
          /leave-group NAME  /add-friend USER  /accept USER  /friends  /unread
          /history [CONVERSATION [PAGE]]  /help  /quit (or Ctrl-D, Ctrl-C)"""
HISTORY_PAGE = 20


def _clock(ts_ms: int) -> str:
    import time

    return time.strftime("%H:%M:%S", time.localtime(ts_ms / 1000))


@cli.command()
@click.option("--node", "-n", "node_id", required=True, help="The node to connect to (its user chats).")
@click.option("--user", "-u", help="The chat user (default: the node's own user).")
@click.option(
    "--replicas",
    type=click.IntRange(1, 5),
    help="Copies of the mail stream and KV buckets when this client creates them (default: 3, or fewer"
    " when the node's JetStream cluster has fewer servers).",
)
@pass_ctx
def chat(c: Ctx, node_id, user, replicas):
    """A plain terminal chat client on a node: rooms, sealed direct and group messages, history.

    Reads commands line by line from the terminal or a pipe; /help lists them."""
    import asyncio

    from dchat_ops.chat.client import ChatClient, ChatIdentity
    from dchat_ops.config.node import NodeFile
    from dchat_ops.runtime.supervisor import Supervisor

    store = c.store()
    node = NodeFile.load(store, node_id).node
    if not Supervisor(store, node_id).running():
        raise DchatOpsError(f"node {node_id} is not running: start it with 'dchat-ops node up {node_id}'")
    ident = ChatIdentity.load(store, user or node.user, node.account)
    term = _Terminal()

    async def on_message(m):
        term.incoming(m)

    async def on_notice(text):
        click.echo(f"* {text}")

    async def session():
        try:
            client = await ChatClient.on_node(
                ident, store, node, replicas=replicas, on_message=on_message, on_notice=on_notice
            ).start()
        except ChatError:
            if node.jetstream is None:  # a node of a cluster may reach its peers' JetStream: say so only now
                raise DchatOpsError(
                    f"node {node_id} has no JetStream, which the chat needs: add 'jetstream: {{enabled: true}}' "
                    f"to {NodeFile.load(store, node_id).path} and run 'dchat-ops node reload {node_id}'"
                ) from None
            raise
        click.echo(f"connected as {ident.name} to node {node_id}\n{CHAT_HELP}")
        try:
            lines = _stdin_lines(asyncio.get_running_loop())
            while True:
                line = await lines.get()
                if line is None:  # end of input (Ctrl-D, or the end of a piped script)
                    break
                try:
                    if not await _chat_command(client, store, term, line.strip()):
                        break
                except DchatOpsError as exc:
                    click.echo(f"error: {exc}")
        finally:
            await client.close()

    try:
        asyncio.run(session())
    except KeyboardInterrupt:  # Ctrl-C: the session is closed already; end without a traceback
        raise SystemExit(130) from None


def _stdin_lines(loop: Any) -> Any:
    """Lines of stdin on an asyncio queue (None at its end), read by a daemon thread: a terminal, a
    pipe or a file alike, and nothing left to wait for when the session ends (Ctrl-C ends at once)."""
    import asyncio
    import threading

    q: asyncio.Queue = asyncio.Queue()

    def read():
        for line in iter(sys.stdin.readline, ""):
            loop.call_soon_threadsafe(q.put_nowait, line)
        loop.call_soon_threadsafe(q.put_nowait, None)

    threading.Thread(target=read, name="chat-stdin", daemon=True).start()
    return q


class _Terminal:
    """What the terminal shows: message lines with their time, and unread counts per conversation."""

    def __init__(self) -> None:
        self.unread: dict[str, int] = {}
        self.current = ""  # the conversation last written to or read

    def show(self, ts: int, conversation: str, sender: str, body: str, note: str = "", tail: str = "") -> None:
        click.echo(f"{_clock(ts)} [{conversation}] {sender}{note}: {body}{tail}")

    def incoming(self, m) -> None:
        note = f" (contact request: /accept {m.sender})" if m.request else ""
        tail = ""
        if m.conversation != self.current:  # not the conversation being had: count it as unread
            self.unread[m.conversation] = self.unread.get(m.conversation, 0) + 1
            tail = f"   ({self.unread[m.conversation]} unread)"
        self.show(m.ts, m.conversation, m.sender, m.body, note, tail)

    def sent(self, client, msg_id: str, conversation: str, text: str) -> None:
        import time

        self.current = conversation
        self.unread.pop(conversation, None)
        self.show(int(time.time() * 1000), conversation, client.me.name, text)

    def read(self, conversation: str) -> None:
        self.current = conversation
        self.unread.pop(conversation, None)


async def _chat_command(client, store, term: _Terminal, line: str) -> bool:
    if not line:
        return True
    if not line.startswith("/"):
        click.echo("say something with /say ROOM TEXT, /dm USER TEXT or /group NAME TEXT (/help lists all)")
        return True
    cmd, _, rest = line.partition(" ")
    rest = rest.strip()
    args = rest.split(" ", 1)
    if cmd == "/quit":
        return False
    if cmd == "/join" and rest:
        await client.join_room(args[0], store=store)
        click.echo(f"joined room {args[0]}")
    elif cmd == "/leave" and rest:
        await client.leave_room(args[0])
        click.echo(f"left room {args[0]}")
    elif cmd == "/say" and len(args) == 2:
        term.sent(client, await client.send_room(args[0], args[1]), f"room:{args[0]}", args[1])
    elif cmd == "/dm" and len(args) == 2:
        term.sent(client, await client.send_dm(args[0], args[1]), f"dm:{args[0]}", args[1])
        if not await client.knows_me(args[0]):
            click.echo(f"* stored for {args[0]}, who has not added you yet: it reaches them as a contact request")
    elif cmd == "/group" and len(args) == 2:
        term.sent(client, await client.send_group(args[0], args[1]), f"group:{args[0]}", args[1])
    elif cmd == "/accept" and rest:
        kept = await client.accept(args[0])
        click.echo(f"{args[0]} is a friend (verified){f'; {len(kept)} kept messages shown' if kept else ''}")
    elif cmd == "/mkgroup" and len(args) == 2:
        await client.create_group(args[0], args[1].split())
        click.echo(f"created group {args[0]}: {', '.join(client.groups[args[0]].members)}")
    elif cmd == "/groups":
        groups = client.group_list()
        for g in groups:
            click.echo(f"{g['group']}: owner {g['owner']}, {len(g['members'])} members, key version {g['version']}")
        if not groups:
            click.echo("no groups yet: /mkgroup NAME USER...")
    elif cmd == "/members" and rest:
        g = client.groups.get(args[0])
        if g is None:
            click.echo(f"error: not a member of group {args[0]}")
        else:
            click.echo(", ".join(f"{m} (owner)" if m == g.owner else m for m in g.members))
    elif cmd == "/add-member" and len(args) == 2:
        await client.add_member(args[0], args[1].strip())
        click.echo(f"added {args[1].strip()} to group {args[0]} (new key version {client.groups[args[0]].version})")
    elif cmd == "/remove-member" and len(args) == 2:
        await client.remove_member(args[0], args[1].strip())
        click.echo(f"removed {args[1].strip()} from group {args[0]} (new key version {client.groups[args[0]].version})")
    elif cmd == "/leave-group" and rest:
        click.echo(await client.leave_group(args[0]))
    elif cmd == "/add-friend" and rest:
        entry = await client.add_friend(args[0])
        click.echo(f"{args[0]} is a friend (key {entry['user_key'][:12]}..., verified)")
    elif cmd == "/friends":
        click.echo(", ".join(sorted(client.friends)) or "no friends yet: /add-friend USER")
    elif cmd == "/unread":
        click.echo(", ".join(f"{conv} {n}" for conv, n in sorted(term.unread.items())) or "nothing unread")
    elif cmd == "/history":
        _history(client, term, rest)
    elif cmd == "/help":
        click.echo(CHAT_HELP)
    else:
        click.echo(f"unknown command or missing arguments: {line.split()[0]} (/help lists the commands)")
    return True


def _history(client, term: _Terminal, rest: str) -> None:
    parts = rest.split()
    conversation = parts[0] if parts else None
    try:
        page = int(parts[1]) if len(parts) > 1 else 1
    except ValueError:
        page = 0
    if page < 1:
        click.echo("error: the page is a number from 1 (the newest messages)")
        return
    rows = client.history.messages(conversation, limit=HISTORY_PAGE, skip=(page - 1) * HISTORY_PAGE)
    for m in rows:
        arrow = "->" if m["direction"] == "out" else "<-"
        click.echo(f"{_clock(m['ts'])} {m['conversation']} {arrow} {m['peer']}: {m['body']}")
    if conversation:
        term.read(conversation)
    if len(rows) == HISTORY_PAGE:
        more = f"/history {conversation or ''} {page + 1}".replace("  ", " ")
        click.echo(f"-- page {page}; older: {more}")
    elif not rows:
        click.echo("no messages" + (" on that page" if page > 1 else ""))
