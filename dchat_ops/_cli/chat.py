"""The terminal chat client."""

from __future__ import annotations

import sys

import click

from dchat_ops._cli.app import Ctx, cli, pass_ctx
from dchat_ops.errors import ChatError, DchatOpsError

# --- chat ----------------------------------------------------------------------------------------------

CHAT_HELP = """commands: /join ROOM  /leave ROOM  /say ROOM TEXT  /dm USER TEXT  /group NAME TEXT
          /mkgroup NAME USER...  /groups  /members NAME  /add-member NAME USER  /remove-member NAME USER
          /leave-group NAME  /add-friend USER  /accept USER  /friends  /history [CONVERSATION]  /quit"""


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
    """A plain terminal chat client on a node: rooms, sealed direct and group messages, history."""
    import asyncio

    from dchat_ops.chat.client import ChatClient, ChatIdentity
    from dchat_ops.config.node import NodeFile
    from dchat_ops.runtime.supervisor import Supervisor

    store = c.store()
    node = NodeFile.load(store, node_id).node
    if not Supervisor(store, node_id).running():
        raise DchatOpsError(f"node {node_id} is not running: start it with 'dchat-ops node up {node_id}'")
    ident = ChatIdentity.load(store, user or node.user, node.account)

    async def on_message(m):
        request = f" (contact request: /accept {m.sender})" if m.request else ""
        click.echo(f"[{m.conversation}] {m.sender}{request}: {m.body}")

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
        loop = asyncio.get_running_loop()
        try:
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line:
                    break
                try:
                    if not await _chat_command(client, store, line.strip()):
                        break
                except DchatOpsError as exc:
                    click.echo(f"error: {exc}")
        finally:
            await client.close()

    asyncio.run(session())


async def _chat_command(client, store, line: str) -> bool:
    if not line:
        return True
    if not line.startswith("/"):
        click.echo("say something with /say ROOM TEXT, /dm USER TEXT or /group NAME TEXT")
        return True
    cmd, _, rest = line.partition(" ")
    args = rest.split(" ", 1)
    if cmd == "/quit":
        return False
    if cmd == "/join":
        await client.join_room(args[0], store=store)
        click.echo(f"joined room {args[0]}")
    elif cmd == "/leave":
        await client.leave_room(args[0])
        click.echo(f"left room {args[0]}")
    elif cmd == "/say" and len(args) == 2:
        await client.send_room(args[0], args[1])
    elif cmd == "/dm" and len(args) == 2:
        await client.send_dm(args[0], args[1])
        if not await client.knows_me(args[0]):
            click.echo(f"* stored for {args[0]}, who has not added you yet: it reaches them as a contact request")
    elif cmd == "/accept" and args[0]:
        kept = await client.accept(args[0])
        click.echo(f"{args[0]} is a friend (verified){f'; {len(kept)} kept messages shown' if kept else ''}")
    elif cmd == "/group" and len(args) == 2:
        await client.send_group(args[0], args[1])
    elif cmd == "/mkgroup" and len(args) == 2:
        await client.create_group(args[0], args[1].split())
        click.echo(f"created group {args[0]}: {', '.join(client.groups[args[0]].members)}")
    elif cmd == "/groups":
        groups = client.group_list()
        for g in groups:
            click.echo(f"{g['group']}: owner {g['owner']}, {len(g['members'])} members, key version {g['version']}")
        if not groups:
            click.echo("no groups yet: /mkgroup NAME USER...")
    elif cmd == "/members" and args[0]:
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
    elif cmd == "/leave-group" and args[0]:
        click.echo(await client.leave_group(args[0]))
    elif cmd == "/add-friend":
        entry = await client.add_friend(args[0])
        click.echo(f"{args[0]} is a friend (key {entry['user_key'][:12]}..., verified)")
    elif cmd == "/friends":
        click.echo(", ".join(sorted(client.friends)) or "no friends yet: /add-friend USER")
    elif cmd == "/history":
        for m in client.history.messages(rest or None, limit=20):
            arrow = "->" if m["direction"] == "out" else "<-"
            click.echo(f"{m['conversation']} {arrow} {m['peer']}: {m['body']}")
    else:
        click.echo(CHAT_HELP)
    return True
