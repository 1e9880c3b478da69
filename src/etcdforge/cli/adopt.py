"""Taking over what was built by hand: ``pki import-cfssl`` (a cfssl PKI), ``adopt`` (a running cluster)."""

from __future__ import annotations

from pathlib import Path

import click

from etcdforge.cli.app import dir_option, hosts_options, main, make_console, run_async, workspace_dir
from etcdforge.cli.pki import pki


@pki.command("import-cfssl")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@dir_option
def pki_import_cfssl(source: Path, directory: Path | None) -> None:
    """Import a cfssl PKI directory (the guide's etcd-ca.pem, etcd-ca-key.pem, JSON configs).

    The CA goes into DIR/pki (ca.pem, ca-key.pem 0600), the JSON into DIR/pki/cfssl/, and cluster.yaml's
    pki section (if there is one) points at them; the guide's leaf certificates are checked, not reused.
    """
    from rich.markup import escape

    from etcdforge.verbs.pki_import import import_cfssl

    d = workspace_dir(directory)
    result = run_async(import_cfssl(d, source))
    console = make_console()
    for line in result.imported.report():
        style = "yellow" if line.startswith("warning:") else ""
        console.print(f"[{style}]{escape(line)}[/]" if style else escape(line))
    if result.spec_updated:
        console.print(f"updated {d / 'cluster.yaml'}: pki now uses the imported CA and cfssl configs")
    else:
        console.print(
            f"imported into {d / 'pki'}; next: `etcdforge init --dir {d} …` (or `etcdforge adopt`), "
            f"then run `etcdforge pki import-cfssl {source} --dir {d}` again to point cluster.yaml at it"
        )


@main.command()
@dir_option
@hosts_options
@click.option("--accept-new-host-keys", is_flag=True, help="Record unknown host keys (never changed ones).")
@click.option("--force", is_flag=True, help="Overwrite an existing cluster.yaml.")
@click.option(
    "--dry-run", is_flag=True, help="Read the cluster and show what would be written; write nothing."
)
def adopt(
    directory: Path | None,
    members: tuple[str, ...],
    name: str | None,
    ssh_user: str,
    ssh_port: int,
    ssh_key: Path | None,
    known_hosts: Path | None,
    sudo: bool,
    accept_new_host_keys: bool,
    force: bool,
    dry_run: bool,
) -> None:
    """Describe a running hand-built cluster (the guide's) in DIR; changes nothing on the hosts.

    Reads each member's etcd unit, flags and cfssl files and asks the cluster for its members, then writes
    cluster.yaml and imports the CA. `plan` then shows the way to etcdforge's layout, `apply` rolls it out.
    """
    from rich.markup import escape

    from etcdforge.verbs.adopt.run import SshOptions
    from etcdforge.verbs.adopt.run import adopt as adopt_op

    d = workspace_dir(directory)
    ssh = SshOptions(user=ssh_user, port=ssh_port, key=ssh_key, known_hosts=known_hosts, sudo=sudo)
    result = run_async(
        adopt_op(
            d,
            members=members,
            name=name,
            ssh=ssh,
            accept_new_host_keys=accept_new_host_keys,
            force=force,
            dry_run=dry_run,
        )
    )
    console = make_console()
    s = result.settings
    for h in result.hosts:
        source = "running process" if h.from_process else "unit ExecStart"
        console.print(
            f"{escape(h.member)} ({h.address}): {escape(h.argv[0])} from {escape(h.unit_path)} ({source})"
        )
    console.print(
        f"cluster: token {escape(s.token)}, ports {s.client_port}/{s.peer_port}, data {escape(s.data_dir)}, "
        f"certificates in {escape(s.ca_dir)}"
    )
    for line in result.imported.report():
        console.print(f"[yellow]{escape(line)}[/]" if line.startswith("warning:") else escape(line))
    if s.tls:
        console.print(f"TLS hardening carried into etcd.tls: {escape(str(dict(s.tls)))}")
    for note in s.tls_notes:
        console.print(f"[yellow]warning:[/] {escape(note)}")
    if s.ignored_flags:
        flags = ", ".join(f"--{f}" for f in s.ignored_flags)
        console.print(
            f"[yellow]warning:[/] not carried over (etcdforge's config decides them): {escape(flags)}"
        )
    if result.ca_key_on:
        from fnmatch import fnmatch

        from etcdforge.layout import STRAY_PATTERNS

        console.print(
            "[yellow]the CA private key is on the members[/] ("
            + escape(", ".join(result.ca_key_on))
            + "): `apply` deletes those copies (the workspace keeps the key)"
        )
        elsewhere = [
            p for p in result.ca_key_on if not any(fnmatch(p.split(":", 1)[1], g) for g in STRAY_PATTERNS)
        ]
        if elsewhere:
            console.print(
                "[yellow]warning:[/] outside etcdforge's reach, delete by hand: "
                + escape(", ".join(elsewhere))
            )
    if result.imported.leaves:
        console.print(
            "the guide's certificates stay on the members and stay valid (same CA) for existing etcdctl "
            "setups; delete them once nothing uses them"
        )
    if dry_run:
        for line in result.plan.lines():
            console.print(line, markup=False)
        console.print(f"dry run: nothing was written in {d} (nor changed on the hosts)")
        return
    console.print(
        f"wrote {result.spec_path} and the admin client certificate; nothing was changed on the hosts. "
        f"Next: etcdforge plan --dir {d}, then etcdforge apply --dir {d} (rolling restarts, one at a time)"
    )
