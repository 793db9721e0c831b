#!/usr/bin/env python3
"""etcd anchor: one etcd member per host, with cluster membership kept right.

Shipped inside the etcd chart next to ``anchor.py`` (Python 3 stdlib only; needs
``etcdctl`` v3). Each command is one idempotent pass, so it can be run by hand, by a gate,
or in a loop by the chart's DaemonSet (``run``).

Commands::

    etcd_anchor.py reconcile   CONNECTION MEMBER [OPTIONS]   one reconcile pass
    etcd_anchor.py remove-self CONNECTION MEMBER             leave the cluster (node teardown)
    etcd_anchor.py run         CONNECTION MEMBER [OPTIONS] [--period 15] [--stop-file F] [--remove-on-stop]
                               reconcile every period until SIGTERM or the stop file; then,
                               with --remove-on-stop, remove-self

    CONNECTION  --endpoints URL[,URL...] --cacert F --cert F --key F [--etcdctl etcdctl]
    MEMBER      --name N --peer-url URL --client-url URL --data-dir DIR
                --manifest-template FILE --manifest-out PATH [--state-file F]
                [--values V.json --templates DIR --root / --var node.KEY=VALUE ...]
    OPTIONS     --auxiliary-threshold 3   real members that must run before auxiliaries go
                --unhealthy-seconds 300   how long a member may stay unhealthy/unstarted
                --retry-seconds 60        bound on retrying "cluster not ready" errors per step
                --auxiliary-cleanup PATH  removed (under --root) once no auxiliary member is left

Host paths (``--data-dir``, ``--manifest-out``, ``--auxiliary-cleanup``, ``anchor.files``)
are resolved under ``--root``; ``--state-file`` (default ``<data-dir>.anchor-state.json``,
also under ``--root``) keeps the "unhealthy since" times and the member's initial cluster.

A reconcile pass, in order:

1. places ``anchor.files`` of ``--values`` (TLS files), if given, like ``anchor.py sync``;
2. if this member was added but has not started for ``--unhealthy-seconds``: removes it,
   wipes its data directory and manifest (a failed join), and continues as a new member;
3. if this member (found by peer URL) is not in the cluster: wipes any stale data
   directory, ``member add --learner`` (retrying "unhealthy cluster", "too many learner
   members", "not enough started members"), and writes the manifest with
   ``initial-cluster-state=existing``;
4. writes the manifest from ``--manifest-template`` if its content changed; placeholders:
   ``${etcd.name}``, ``${etcd.peer_url}``, ``${etcd.client_url}``, ``${etcd.data_dir}``,
   ``${etcd.initial_cluster}``, ``${etcd.initial_cluster_state}``, ``${etcd.client_port}``,
   ``${etcd.peer_port}``, plus ``${values.*}``
   and ``${node.*}`` as in ``anchor.py``;
5. a started learner is promoted (retrying until it is in sync with the leader);
6. once this member is a started voting member: any other member unhealthy (or never
   started) for longer than ``--unhealthy-seconds`` is removed;
7. once ``--auxiliary-threshold`` started, healthy, voting, non-auxiliary members exist, the
   auxiliary members are removed, after moving leadership to a real member if an auxiliary
   leads. A member is *auxiliary* if its name is ``auxiliary-<N>`` or ends in
   ``-auxiliary-<N>`` (the genesis bootstrap members). With no auxiliary left, the
   ``--auxiliary-cleanup`` paths are removed.

``remove-self`` hands leadership to another healthy voting member if this one leads,
removes this member (retrying), then deletes the manifest and (unless ``--keep-data``) the
data directory and state file.

Exit status: 0 the pass completed; 1 bad input; 2 the cluster was not ready within
``--retry-seconds`` or unreachable (run the pass again later). Messages go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import anchor  # noqa: E402  (ships next to this file)
from fileio import atomic_write  # noqa: E402  (likewise)

AUXILIARY = re.compile(r"(^|-)auxiliary-\d+$")
RETRYABLE = (
    "unhealthy cluster",
    "too many learner members",
    "not enough started members",
    "in sync with leader",
    "leader changed",
    "request timed out",
    "no leader",
)
EXIT_RETRY = 2


class RetryLater(Exception):
    """The cluster was not ready or reachable; the pass should run again later."""


class EtcdError(Exception):
    """etcdctl failed; the message is its stderr."""


@dataclass(frozen=True)
class Member:
    """One entry of ``etcdctl member list``."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    learner: bool

    @property
    def hex_id(self) -> str:
        return format(self.id, "x")

    @property
    def started(self) -> bool:
        return bool(self.name) and bool(self.client_urls)

    @property
    def voting(self) -> bool:
        """Started and not a learner."""
        return self.started and not self.learner

    @property
    def auxiliary(self) -> bool:
        return bool(AUXILIARY.search(self.name))

    def label(self) -> str:
        return self.name or f"unstarted-{self.hex_id}"


class Etcdctl:
    """etcdctl v3 with TLS flags, short timeouts and a clean environment."""

    def __init__(self, binary: str, endpoints: list[str], cacert: str, cert: str, key: str):
        self.binary = binary
        self.endpoints = endpoints
        self.tls = [f"--cacert={cacert}", f"--cert={cert}", f"--key={key}"]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
        self.env["ETCDCTL_API"] = "3"

    def run(self, *args: str, endpoints: list[str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
        command = [self.binary, f"--endpoints={','.join(endpoints or self.endpoints)}", *self.tls,
                   "--dial-timeout=2s", "--command-timeout=5s", *args]
        try:
            result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired as exc:
            raise EtcdError(f"etcdctl {args[0]} timed out") from exc
        if check and result.returncode != 0:
            raise EtcdError(result.stderr.strip() or f"etcdctl {args[0]} exited {result.returncode}")
        return result

    def members(self) -> list[Member]:
        listing = json.loads(self.run("member", "list", "-w", "json").stdout)
        return [
            Member(id=int(m["ID"]), name=m.get("name", ""), peer_urls=tuple(m.get("peerURLs") or ()),
                   client_urls=tuple(m.get("clientURLs") or ()), learner=bool(m.get("isLearner")))
            for m in listing.get("members", [])
        ]

    def healthy(self, urls: list[str]) -> set[str]:
        """The subset of ``urls`` whose endpoint answers healthy."""
        if not urls:
            return set()
        result = self.run("endpoint", "health", "-w", "json", endpoints=urls, check=False)
        try:
            report = json.loads(result.stdout or "[]")
        except ValueError:
            return set()
        return {entry["endpoint"] for entry in report if entry.get("health")}

    def leader(self, urls: list[str]) -> int | None:
        """The leader's member ID as reported by the first endpoint that answers."""
        for url in urls:
            result = self.run("endpoint", "status", "-w", "json", endpoints=[url], check=False)
            try:
                status = json.loads(result.stdout or "[]")
            except ValueError:
                continue
            if status and status[0].get("Status", {}).get("leader"):
                return int(status[0]["Status"]["leader"])
        return None


def retry(action, what: str, seconds: float):
    """Run ``action`` until it succeeds, retrying cluster-not-ready errors with bounded backoff."""
    deadline = time.monotonic() + seconds
    delay = 0.5
    while True:
        try:
            return action()
        except EtcdError as exc:
            message = str(exc)
            if not any(marker in message for marker in RETRYABLE):
                raise
            if time.monotonic() + delay > deadline:
                raise RetryLater(f"{what}: still failing after {seconds:g}s: {message}") from exc
            anchor.log(f"{what}: retrying in {delay:g}s: {message}")
            time.sleep(delay)
            delay = min(delay * 2, 4.0)


def render_manifest(template: str, context: dict, *, initial_cluster_state: str = "existing", **etcd) -> bytes:
    """An etcd member's manifest from ``template``: ``context`` plus ``etcd`` (name, peer_url,
    client_url, data_dir, initial_cluster), ``initial_cluster_state`` and the ports of the URLs."""
    with open(template, encoding="utf-8") as handle:
        text = handle.read()
    ports = {"client_port": urlsplit(etcd["client_url"]).port, "peer_port": urlsplit(etcd["peer_url"]).port}
    return anchor.render(text, {**context, "etcd": {**etcd, **ports, "initial_cluster_state": initial_cluster_state}}).encode()


class MemberAnchor:
    """The reconcile and remove-self logic for the local member."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.ctl = Etcdctl(args.etcdctl, args.endpoints.split(","), args.cacert, args.cert, args.key)
        self.values = anchor.load_json(args.values) if args.values else {}
        self.context = anchor.build_context(self.values, anchor.parse_vars(args.var))
        self.data_dir = anchor.host_path(args.root, args.data_dir)
        self.manifest = anchor.host_path(args.root, args.manifest_out)
        self.state_path = anchor.host_path(args.root, args.state_file or args.data_dir.rstrip("/") + ".anchor-state.json")
        self.state = self.load_state()

    # --- state ------------------------------------------------------------------------
    def load_state(self) -> dict:
        try:
            return anchor.load_json(self.state_path)
        except anchor.AnchorError:
            return {}

    def save_state(self) -> None:
        data = json.dumps(self.state, sort_keys=True, indent=1).encode()
        atomic_write(self.state_path, data, 0o600)

    def overdue(self, key: str, failing: bool, now: float) -> bool:
        """Track since when ``key`` has been failing; True once longer than the threshold."""
        since = self.state.setdefault("unhealthy_since", {})
        if not failing:
            since.pop(key, None)
            return False
        since.setdefault(key, now)
        return now - since[key] > self.args.unhealthy_seconds

    # --- pieces -----------------------------------------------------------------------
    def members(self) -> list[Member]:
        """The member list; later requests go to the started voting members (learners refuse
        most requests, such as ``member promote``)."""
        members = self.ctl.members()
        voters = [url for m in members if m.voting for url in m.client_urls]
        if voters:
            self.ctl.endpoints = voters
        return members

    def healthy(self, members: list[Member]) -> list[Member]:
        """Those of ``members`` whose client endpoint answers healthy."""
        urls = self.ctl.healthy([url for m in members for url in m.client_urls])
        return [m for m in members if urls.intersection(m.client_urls)]

    def find_self(self, members: list[Member]) -> Member | None:
        """This host's member (by peer URL), named even before it started."""
        me = next((m for m in members if self.args.peer_url in m.peer_urls), None)
        return replace(me, name=me.name or self.args.name) if me else None

    def wipe(self) -> None:
        """Forget the local member: data directory, manifest, remembered initial cluster."""
        for path in (self.manifest, self.data_dir):
            if anchor.remove_path(path):
                anchor.log(f"removed {path}")
        self.state.pop("initial_cluster", None)

    def render_manifest(self, initial_cluster: str) -> bytes:
        """The member's static pod manifest for ``initial_cluster``."""
        return render_manifest(self.args.manifest_template, self.context, name=self.args.name,
                               peer_url=self.args.peer_url, client_url=self.args.client_url,
                               data_dir=self.args.data_dir, initial_cluster=initial_cluster)

    def write_manifest(self, members: list[Member]) -> None:
        if "initial_cluster" not in self.state:
            self.state["initial_cluster"] = ",".join(
                f"{self.args.name if self.args.peer_url in m.peer_urls else m.label()}={url}"
                for m in members for url in m.peer_urls)
        if atomic_write(self.manifest, self.render_manifest(self.state["initial_cluster"]), 0o600):
            anchor.log(f"updated {self.args.manifest_out}")

    def add_self(self) -> list[Member]:
        if os.path.exists(self.data_dir):
            anchor.log(f"wiping stale data directory {self.args.data_dir}")
        self.wipe()
        self.state.get("unhealthy_since", {}).pop("self", None)
        retry(lambda: self.ctl.run("member", "add", self.args.name, f"--peer-urls={self.args.peer_url}", "--learner"),
              f"add {self.args.name} as learner", self.args.retry_seconds)
        anchor.log(f"added {self.args.name} ({self.args.peer_url}) as learner")
        return self.members()

    def remove(self, member: Member, why: str) -> None:
        others = [url for m in self.members() if m.id != member.id and m.voting for url in m.client_urls]
        try:
            retry(lambda: self.ctl.run("member", "remove", member.hex_id, endpoints=others or None),
                  f"remove {member.label()}", self.args.retry_seconds)
        except EtcdError as exc:
            if "member not found" not in str(exc):
                raise
            anchor.log(f"member {member.label()} ({member.hex_id}) was already removed")
            return
        anchor.log(f"removed member {member.label()} ({member.hex_id}): {why}")

    def hand_off_leadership(self, members: list[Member], leaving: set[int], candidates: list[Member]) -> None:
        """If a member in ``leaving`` leads, move leadership to the first candidate."""
        urls = [u for m in members if m.started for u in m.client_urls]
        leader_id = self.ctl.leader(urls)
        leader = next((m for m in members if m.id == leader_id), None)
        if leader is None or leader.id not in leaving or not candidates:
            return
        target = candidates[0]
        retry(lambda: self.ctl.run("move-leader", target.hex_id, endpoints=list(leader.client_urls)),
              f"move leadership from {leader.label()} to {target.label()}", self.args.retry_seconds)
        anchor.log(f"moved leadership from {leader.label()} to {target.label()}")

    # --- commands ---------------------------------------------------------------------
    def reconcile(self) -> None:
        if self.values:
            anchor.sync(self.values, self.context, self.args.templates, self.args.root)
        now = time.time()
        members = self.members()
        me = self.find_self(members)
        if me is not None and self.overdue("self", not me.started, now):
            self.remove(me, f"did not start within {self.args.unhealthy_seconds:g}s")
            me = None
        if me is None:
            members = self.add_self()
            me = self.find_self(members)
        self.write_manifest(members)
        if me.learner and me.started:
            retry(lambda: self.ctl.run("member", "promote", me.hex_id), f"promote {me.name}", self.args.retry_seconds)
            anchor.log(f"promoted {me.name} to voting member")
            members = self.members()
            me = self.find_self(members)
        if me.voting:
            members = self.remove_unhealthy(members, me, now)
            self.remove_auxiliaries(members)

    def remove_unhealthy(self, members: list[Member], me: Member, now: float) -> list[Member]:
        others = [m for m in members if m.id != me.id]
        healthy = {m.id for m in self.healthy(others)}
        tracked = {m.hex_id for m in others}
        since = self.state.setdefault("unhealthy_since", {})
        for key in [k for k in since if k != "self" and k not in tracked]:
            del since[key]
        changed = False
        for member in others:
            failing = not (member.started and member.id in healthy)
            if self.overdue(member.hex_id, failing, now):
                self.remove(member, f"unhealthy for more than {self.args.unhealthy_seconds:g}s")
                since.pop(member.hex_id, None)
                changed = True
        return self.members() if changed else members

    def remove_auxiliaries(self, members: list[Member]) -> None:
        auxiliaries = [m for m in members if m.auxiliary]
        if auxiliaries:
            ready = self.healthy([m for m in members if m.voting and not m.auxiliary])
            if len(ready) < self.args.auxiliary_threshold:
                return
            self.hand_off_leadership(members, {m.id for m in auxiliaries}, ready)
            for member in auxiliaries:
                self.remove(member, f"{len(ready)} real members are running")
        for path in self.args.auxiliary_cleanup:
            if anchor.remove_path(anchor.host_path(self.args.root, path)):
                anchor.log(f"removed {path}")

    def remove_self(self) -> None:
        members = self.members()
        me = self.find_self(members)
        if me is not None:
            others = self.healthy([m for m in members if m.id != me.id and m.voting])
            self.hand_off_leadership(members, {me.id}, others)
            self.remove(me, "teardown")
        anchor.remove_path(self.manifest)
        if not self.args.keep_data:
            anchor.remove_path(self.data_dir)
            anchor.remove_path(self.state_path)
            self.state = {}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(description="Keep this host's etcd member in the cluster.")
    commands = top.add_subparsers(dest="command", required=True)
    for name in ("reconcile", "remove-self", "run"):
        sub = commands.add_parser(name)
        anchor.add_common_arguments(sub)
        sub.add_argument("--etcdctl", default="etcdctl")
        for option in ("--endpoints", "--cacert", "--cert", "--key", "--name", "--peer-url", "--client-url",
                       "--data-dir", "--manifest-template", "--manifest-out"):
            sub.add_argument(option, required=True)
        sub.add_argument("--state-file")
        sub.add_argument("--auxiliary-threshold", type=int, default=3)
        sub.add_argument("--unhealthy-seconds", type=float, default=300.0)
        sub.add_argument("--retry-seconds", type=float, default=60.0)
        sub.add_argument("--auxiliary-cleanup", action="append", default=[])
        sub.add_argument("--keep-data", action="store_true", help="remove-self: keep the data directory")
        if name == "run":
            sub.add_argument("--period", type=float, default=15.0)
            sub.add_argument("--stop-file")
            sub.add_argument("--remove-on-stop", action="store_true")
    return top


def run_command(args: argparse.Namespace) -> int:
    member = MemberAnchor(args)
    try:
        if args.command == "reconcile":
            member.reconcile()
        elif args.command == "remove-self":
            member.remove_self()
        else:
            watch = anchor.StopWatch(args.stop_file)
            while not watch.stopping():
                try:
                    member.reconcile()
                except (RetryLater, EtcdError) as exc:
                    anchor.log(f"pass incomplete: {exc}")
                member.save_state()
                watch.sleep(args.period)
            if args.remove_on_stop:
                member.remove_self()
    finally:
        if member.state:
            member.save_state()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run_command(args)
    except anchor.AnchorError as exc:
        anchor.log(f"error: {exc}")
        return 1
    except (RetryLater, EtcdError) as exc:
        anchor.log(f"not done, run again: {exc}")
        return EXIT_RETRY


if __name__ == "__main__":
    sys.exit(main())
